-- Worker, after a transient error: the next attempt waits in the delayed set (its message in
-- the record), not in a worker. A retrying record has no TTL. Returns 'retrying', or, when the
-- record is not `started` (a duplicate delivery's late end, a run cancelled or lost meanwhile),
-- the state found ('' without a record) and changes nothing.
--#include transition.lua
local delayed = KEYS[6]
local due, message, queue, error = ARGV[2], ARGV[3], ARGV[4], ARGV[5]

if before ~= 'started' then return before or '' end

redis.call('HSET', record, 'state', 'retrying', 'next_attempt_at', ms(due), 'message', message,
           'queue', queue, 'error', error, 'deliveries', 0)
redis.call('ZADD', delayed, due, task_id)
redis.call('PERSIST', record)
publish()
return 'retrying'

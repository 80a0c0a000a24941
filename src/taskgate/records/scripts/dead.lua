-- Worker, when retries ran out (or no worker has the task): the task fails and joins the dead
-- letters, its arguments kept so it can be requeued. Returns 'dead', or 'already:<state>' for a
-- run that has ended (a duplicate's late end): nothing changes.
--#include transition.lua
local dead = KEYS[6]
local ttl, now, error, arguments, reason = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

if ENDED[before] then return 'already:' .. before end

redis.call('HSET', record, 'state', 'failed', 'finished_at', ms(now), 'error', error,
           'args', arguments, 'dead_reason', reason)
redis.call('HDEL', record, 'next_attempt_at')
redis.call('ZADD', dead, now, task_id)
redis.call('ZREMRANGEBYSCORE', dead, '-inf', now - ttl)
redis.call('EXPIRE', dead, ttl)
redis.call('EXPIRE', record, ttl)
publish()
return 'dead'

-- API: a queued or retrying task is cancelled at once; a started one gets the cancel flag for
-- the task to see. Either way the record keeps when cancel was first asked
-- (`cancel_requested_at`, ms), whatever state the task then ends in. Returns 'cancelled' (now),
-- 'cancelling', 'missing', or 'already:<state>'.
--#include transition.lua
local delayed = KEYS[6]
local now, ttl = ARGV[2], ARGV[3]

if not before then return 'missing' end
if ENDED[before] then return 'already:' .. before end
redis.call('HSET', record, 'cancel', '1')
redis.call('HSETNX', record, 'cancel_requested_at', ms(now))  -- a second ask keeps the first time
if before == 'queued' or before == 'retrying' then
  redis.call('HSET', record, 'state', 'cancelled', 'finished_at', ms(now))
  leave_wait(task_id, record)
  redis.call('HDEL', record, 'next_attempt_at', 'message', 'queue', 'waiting_for')  -- waits no more
  redis.call('ZREM', delayed, task_id)
  redis.call('EXPIRE', record, ttl)
  publish()
  return 'cancelled'
end
publish()
return 'cancelling'

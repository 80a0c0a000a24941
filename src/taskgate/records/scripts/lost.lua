-- Worker main process, when the pool process running a task vanished without the task's own
-- handlers running (a hard time limit, a kill): `state` is what Celery's handling implies
-- ('failed': the message was acknowledged; 'queued': it was requeued). Changes only a record
-- still 'started' (the task may have ended just before). Returns the state the record is in.
--#include transition.lua
local now, ttl, error, state = ARGV[2], ARGV[3], ARGV[4], ARGV[5]

if before ~= 'started' then return before or false end
if state == 'failed' then
  redis.call('HSET', record, 'state', 'failed', 'finished_at', ms(now), 'error', error)
  redis.call('EXPIRE', record, ttl)
else
  redis.call('HSET', record, 'state', 'queued', 'error', error)
  redis.call('HDEL', record, 'progress')
end
publish()
return state

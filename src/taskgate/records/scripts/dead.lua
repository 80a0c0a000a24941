-- Worker, when retries ran out: the task fails and joins the dead letters, its arguments kept
-- so it can be requeued. Returns 'dead'.
--#include transition.lua
local dead = KEYS[6]
local ttl, now, error, arguments, reason = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

redis.call('HSET', record, 'state', 'failed', 'finished_at', ms(now), 'error', error,
           'args', arguments, 'dead_reason', reason)
redis.call('HDEL', record, 'next_attempt_at')
redis.call('ZADD', dead, now, task_id)
redis.call('ZREMRANGEBYSCORE', dead, '-inf', now - ttl)
redis.call('EXPIRE', dead, ttl)
redis.call('EXPIRE', record, ttl)
publish()
return 'dead'

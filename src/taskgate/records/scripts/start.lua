-- Worker, before running a task. Marks it started and alive, or says why not to run it.
-- Returns 'run', 'cancelled' (never run it), 'expired' (never run it: it was not started before
-- its expiry, now or earlier; ended `expired` here if not yet), 'finished' (a duplicate delivery:
-- skip) or 'dead'
-- (delivered max_deliveries times already: it keeps killing its worker; dead-lettered, with its
-- arguments kept to requeue it, all in this one step), or 'arguments' when it would be dead
-- but `arguments` is '' (the worker sends a task's arguments only then, and calls again), or
-- 'owner:<owner>' when KEYS[5] is not that owner's in-flight set (nothing changed: call again
-- with the right one; the worker takes the owner from the message, which may lack it).
--#include transition.lua
--#include expiry.lua
local dead = KEYS[6]
local name, now, ttl, max_deliveries, node, failure_ttl, arguments =
  ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8]
local owner = ARGV[9]  -- the owner whose in-flight set KEYS[5] is

local recorded = redis.call('HGET', record, 'owner') or ANONYMOUS
if recorded ~= owner then return 'owner:' .. recorded end

if before == 'succeeded' or before == 'failed' then return 'finished' end
if before == 'cancelled' or redis.call('HGET', record, 'cancel') == '1' then
  if before ~= 'cancelled' then
    redis.call('HSET', record, 'state', 'cancelled', 'finished_at', ms(now))
    redis.call('EXPIRE', record, ttl)
    publish()
  end
  return 'cancelled'
end
if before == 'expired' then return 'expired' end
if before == 'queued' or before == 'retrying' then  -- a message that waited past its expiry
  local expires_at = redis.call('HGET', record, 'expires_at')
  if past_expiry(expires_at, now) then
    end_expired(expires_at, now, ttl)
    return 'expired'
  end
end
if not before then
  -- sent by another producer (plain Celery): start a record for it
  redis.call('HSET', record, 'name', name, 'created_at', ms(now))
end
local deliveries = tonumber(redis.call('HGET', record, 'deliveries') or '0')
if deliveries >= max_deliveries then
  if arguments == '' then return 'arguments' end
  local error = cjson.encode({type = 'WorkerLostError', retryable = false, message =
    'the task was delivered ' .. max_deliveries .. ' times and its worker died each time; dead-lettered'})
  redis.call('HSET', record, 'state', 'failed', 'finished_at', ms(now), 'error', error,
             'dead_reason', 'max_deliveries', 'args', arguments)
  redis.call('ZADD', dead, now, task_id)
  redis.call('EXPIRE', dead, failure_ttl)
  redis.call('EXPIRE', record, failure_ttl)
  publish()
  return 'dead'
end
redis.call('HSET', record, 'state', 'started', 'started_at', ms(now), 'deliveries', deliveries + 1,
           'worker', node)
redis.call('HDEL', record, 'next_attempt_at')
redis.call('HINCRBY', record, 'attempts', 1)
redis.call('PERSIST', record)  -- it may run for longer than any TTL: it expires once it ends
mark_alive(node)
publish()
return 'run'

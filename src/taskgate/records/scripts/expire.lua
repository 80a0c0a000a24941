-- Worker keeper (the expiry sweep): end a run whose expiry has passed while it waited (queued,
-- delayed, retrying, or waiting for admission) and that has not started. KEYS: as every
-- transition (the fifth the in-flight set of `owner`), then the delayed set and the expiring set.
-- ARGV: task id, now (s), ttl (s) of the ended record, owner.
-- Returns 'expired' (ended now), 'skipped' (started, ended, or no expiry: it only leaves the
-- expiring set), 'missing' (no record: it leaves the set), 'later' (its expiry has not come:
-- the set's score is put back to it), or 'owner:<owner>' when KEYS[5] is not that owner's
-- in-flight set (nothing changed: call again with the right one).
--#include transition.lua
--#include expiry.lua
local delayed, expiring = KEYS[6], KEYS[7]
local now, ttl, owner = ARGV[2], ARGV[3], ARGV[4]

if not before then
  redis.call('ZREM', expiring, task_id)
  return 'missing'
end
local recorded = redis.call('HGET', record, 'owner') or ANONYMOUS
if recorded ~= owner then return 'owner:' .. recorded end
local expires_at = redis.call('HGET', record, 'expires_at')
if not expires_at or (before ~= 'queued' and before ~= 'retrying') then
  redis.call('ZREM', expiring, task_id)
  return 'skipped'
end
if not past_expiry(expires_at, now) then
  redis.call('ZADD', expiring, tonumber(expires_at) / 1000, task_id)
  return 'later'
end
redis.call('ZREM', expiring, task_id)
redis.call('ZREM', delayed, task_id)
end_expired(expires_at, now, ttl)
return 'expired'

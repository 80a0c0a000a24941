-- Worker: move due delayed tasks to their queues, each pushed exactly once; skip (and drop)
-- tasks cancelled meanwhile. A task whose expiry (`expires_at`, ms) has passed is not pushed:
-- it goes to the expiring set, at its expiry, where the keeper's sweep (expire.lua) ends it
-- `expired` (this script ends no task: it has no task's transition keys).
-- KEYS: the delayed set, the expiring set, then per task its record and the queue list its
-- record named when the caller read it ('' if none); ARGV: now, then the task ids.
-- A task whose queue changed since that read stays for the next round. Returns the count moved.
local delayed, expiring = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])

local moved = 0
for i = 2, #ARGV do
  local task_id, record, queue = ARGV[i], KEYS[2 * i - 1], KEYS[2 * i]
  local due = redis.call('ZSCORE', delayed, task_id)
  if due and tonumber(due) <= now then
    local fields = redis.call('HMGET', record, 'message', 'queue', 'state', 'expires_at')
    if not fields[2] or fields[2] == queue then
      redis.call('ZREM', delayed, task_id)
      if fields[4] and tonumber(fields[4]) <= now * 1000 and (fields[3] == 'queued' or fields[3] == 'retrying') then
        redis.call('ZADD', expiring, tonumber(fields[4]) / 1000, task_id)  -- past its expiry: for the sweep
        fields[1] = false
      end
      if fields[1] and fields[2] and (fields[3] == 'queued' or fields[3] == 'retrying') then
        redis.call('LPUSH', queue, fields[1])
        moved = moved + 1
      end
      redis.call('HDEL', record, 'message', 'queue')
    end
  end
end
return moved

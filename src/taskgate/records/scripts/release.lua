-- Worker: move due delayed tasks on to their queues, each sent exactly once (admission.lua's
-- `dispatch`: pushed now, or waiting for its task's limits); skip (and drop) tasks cancelled
-- meanwhile. A task whose expiry (`expires_at`, ms) has passed is not sent: it goes to the
-- expiring set, at its expiry, where the keeper's sweep (expire.lua) ends it `expired` (this
-- script ends no task: it has no task's transition keys).
-- KEYS: the delayed set, the expiring set, then per task its record and the queue list its
-- record named when the caller read it ('' if none); ARGV: now, then the task ids.
-- A task whose queue changed since that read stays for the next round. Returns the count sent.
--#include admission.lua
local delayed, expiring = KEYS[1], KEYS[2]
local now = tonumber(ARGV[1])

local moved = 0
for i = 2, #ARGV do
  local task_id, record, queue = ARGV[i], KEYS[2 * i - 1], KEYS[2 * i]
  local due = redis.call('ZSCORE', delayed, task_id)
  if due and tonumber(due) <= now then
    local fields = redis.call('HMGET', record, 'message', 'queue', 'state', 'name', 'expires_at')
    if not fields[2] or fields[2] == queue then
      redis.call('ZREM', delayed, task_id)
      redis.call('HDEL', record, 'message', 'queue')
      if fields[5] and tonumber(fields[5]) <= now * 1000 and (fields[3] == 'queued' or fields[3] == 'retrying') then
        redis.call('ZADD', expiring, tonumber(fields[5]) / 1000, task_id)  -- past its expiry: for the sweep
        fields[1] = false
      end
      if fields[1] and fields[2] and (fields[3] == 'queued' or fields[3] == 'retrying') then
        dispatch(fields[4] or '?', task_id, record, queue, fields[1], '', nil)
        moved = moved + 1
      end
    end
  end
end
return moved

-- Worker: move due delayed tasks to their queues, each pushed exactly once; skip (and drop)
-- tasks cancelled meanwhile. KEYS: the delayed set, then per task its record and the queue
-- list its record named when the caller read it ('' if none); ARGV: now, then the task ids.
-- A task whose queue changed since that read stays for the next round. Returns the count moved.
local delayed = KEYS[1]
local now = tonumber(ARGV[1])

local moved = 0
for i = 2, #ARGV do
  local task_id, record, queue = ARGV[i], KEYS[2 * i - 2], KEYS[2 * i - 1]
  local due = redis.call('ZSCORE', delayed, task_id)
  if due and tonumber(due) <= now then
    local fields = redis.call('HMGET', record, 'message', 'queue', 'state')
    if not fields[2] or fields[2] == queue then
      redis.call('ZREM', delayed, task_id)
      if fields[1] and fields[2] and (fields[3] == 'queued' or fields[3] == 'retrying') then
        redis.call('LPUSH', queue, fields[1])
        moved = moved + 1
      end
      redis.call('HDEL', record, 'message', 'queue')
    end
  end
end
return moved

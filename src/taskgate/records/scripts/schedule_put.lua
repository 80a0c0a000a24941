-- API or worker: create or change a schedule, keeping its indexes and due time in step.
-- KEYS: the schedule, the due set, the index of all schedules, the owner's index.
-- ARGV: schedule id; mode ('create': make it unless it exists, 'upsert': make or change it,
-- 'update': change it only if it exists); the owner's limit (0: none); now (ms); its next due
-- score (ms; '' to leave the due set as it is); enabled ('1', '0', or '' to leave it); then
-- field/value pairs to set.
-- Returns 'created', 'updated', '#exists', '#missing' or '#limit' (nothing changed then).
local schedule, due_set, all, mine = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local schedule_id, mode, limit, now, next_due, enabled =
  ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]

local exists = redis.call('EXISTS', schedule) == 1
if exists and mode == 'create' then return '#exists' end
if not exists and mode == 'update' then return '#missing' end
if not exists then
  if limit > 0 and redis.call('ZCARD', mine) >= limit then return '#limit' end
  redis.call('ZADD', all, now, schedule_id)
  redis.call('ZADD', mine, now, schedule_id)
  redis.call('HSET', schedule, 'created_at', now)
end
for i = 7, #ARGV, 2 do
  redis.call('HSET', schedule, ARGV[i], ARGV[i + 1])
end
redis.call('HSET', schedule, 'updated_at', now)
if enabled ~= '' then redis.call('HSET', schedule, 'enabled', enabled) end
local on = redis.call('HGET', schedule, 'enabled') == '1'
if not on then
  redis.call('ZREM', due_set, schedule_id)
elseif next_due ~= '' then
  redis.call('ZADD', due_set, next_due, schedule_id)
  redis.call('HSET', schedule, 'next_run_at', next_due)
end
if exists then return 'updated' end
return 'created'

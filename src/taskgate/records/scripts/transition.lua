-- Shared by every script that changes a task's state. Their first five KEYS and first ARGV:
local record, channel, alive, stats, inflight = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local task_id = ARGV[1]
--#include times.lua
--#include admission.lua
--#include workflow.lua
-- (workflow.lua includes webhooks.lua: the outbox of webhook deliveries)

-- Mirrors of Python constants (tests/records/test_scripts.py checks that they agree).
local ENDED = {succeeded = true, failed = true, cancelled = true, expired = true}
local ANONYMOUS = 'anonymous'  -- the owner of a record without an owner field
local LATENCY_BUCKETS = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0}
local STATS_TTL = 2592000
local HEARTBEAT_TTL = 10
local TIMELINE_MAX = 50  -- entries a record's timeline keeps: the first, and the latest others
local MINUTES_KEPT = 61  -- per-minute counts kept in the stats (the summary's last hour)
local MINUTE_FIELDS = {'succeeded', 'failed', 'cancelled', 'expired', 'wait_sum', 'wait_n'}

-- The state the script found.
local before = redis.call('HGET', record, 'state')

local function observe(metric, name, value)
  local bucket = #LATENCY_BUCKETS
  for i, bound in ipairs(LATENCY_BUCKETS) do
    if value <= bound then bucket = i - 1 break end
  end
  redis.call('HINCRBY', stats, metric .. ':' .. name .. ':' .. bucket, 1)
  redis.call('HINCRBYFLOAT', stats, metric .. '_sum:' .. name, value)
end

-- Redis's clock, in whole milliseconds (admission.lua's): the minute a task ended in, and the
-- time of a timeline entry with none of its own in the record.
local clock_ms = adm_now

-- A timeline entry: `state` entered at `own` (a stored time: the record's own for it, so the two
-- agree) or else on Redis's clock, in attempt `attempt`.
local function entry_of(state, own, attempt, worker)
  local at = own and seconds(own)
  local entry = {state = state, at = at and math.floor(at * 1000 + 0.5) or clock_ms(), attempt = attempt}
  if state == 'started' then entry['worker'] = worker end
  return entry
end

-- The timeline a record's own fields imply for a run that went the straight way, up to state
-- `upto`: queued at created_at, started at started_at (attempt 1, on `worker`), then ended at
-- finished_at (attempt 1, or 0 when it never started). records/model.py builds the same.
local function straight(fields, upto)
  local timeline = {entry_of('queued', fields['created_at'], 0)}
  if upto == 'started' or (ENDED[upto] and fields['started_at']) then
    timeline[2] = entry_of('started', fields['started_at'], 1, fields['worker'])
  end
  if ENDED[upto] then timeline[#timeline + 1] = entry_of(upto, fields['finished_at'], #timeline - 1) end
  return timeline
end

local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i].state ~= b[i].state or a[i].at ~= b[i].at or a[i].attempt ~= b[i].attempt
        or a[i].worker ~= b[i].worker then return false end
  end
  return true
end

-- Add the state the task has just entered (from `before`) to its timeline (a JSON list of
-- {state, at, attempt, worker}), in `fields` (what is published) and in the record. A record
-- keeps it only when its fields do not imply it (`straight`: most runs): a field over 64 bytes
-- makes Redis keep the whole hash in an encoding twice the size. One that does not parse starts
-- again.
local function add_to_timeline(fields, before, state)
  local timeline
  if fields['timeline'] then
    local ok, stored = pcall(cjson.decode, fields['timeline'])
    timeline = (ok and type(stored) == 'table') and stored or {}
  else
    timeline = before and straight(fields, before) or {}
  end
  local own = (state == 'started' and fields['started_at']) or (ENDED[state] and fields['finished_at']) or nil
  timeline[#timeline + 1] = entry_of(state, own, tonumber(fields['attempts'] or '0'), fields['worker'])
  while #timeline > TIMELINE_MAX do table.remove(timeline, 2) end
  fields['timeline'] = cjson.encode(timeline)
  if same(timeline, straight(fields, state)) then
    redis.call('HDEL', record, 'timeline')
  else
    redis.call('HSET', record, 'timeline', fields['timeline'])
  end
end

-- Count a task that ended in `state` in this minute's stats (with its wait, if it started), and
-- delete the minutes that fell out of the last MINUTES_KEPT: ``minute:trimmed`` is the latest
-- deleted, and every minute counted since is newer, so at most MINUTES_KEPT + 1 are looked at.
local function count_minute(state, wait)
  local minute = math.floor(clock_ms() / 60000)
  local prefix = 'minute:' .. minute .. ':'
  redis.call('HINCRBY', stats, prefix .. state, 1)
  if wait then
    redis.call('HINCRBYFLOAT', stats, prefix .. 'wait_sum', wait)
    redis.call('HINCRBY', stats, prefix .. 'wait_n', 1)
  end
  local oldest = minute - MINUTES_KEPT
  local stored = tonumber(redis.call('HGET', stats, 'minute:trimmed') or '')
  local trimmed = stored or oldest
  if trimmed < oldest then
    for old = trimmed + 1, math.min(oldest, trimmed + MINUTES_KEPT + 1) do
      local gone = {}
      for i, name in ipairs(MINUTE_FIELDS) do gone[i] = 'minute:' .. old .. ':' .. name end
      redis.call('HDEL', stats, unpack(gone))
    end
    trimmed = oldest
  end
  if trimmed ~= stored then redis.call('HSET', stats, 'minute:trimmed', trimmed) end  -- once a minute
end

-- Publish the record (as JSON) with a bumped sequence number, adding a new state to its
-- timeline. When this script ended the task:
-- count it in the stats, take it off its owner's in-flight set, remove its alive mark (no
-- process runs it any more) and, if it succeeded, drop its delivery count.
local function publish()
  redis.call('HINCRBY', record, 'seq', 1)
  local flat = redis.call('HGETALL', record)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  local state = fields['state']
  if state and state ~= before then add_to_timeline(fields, before, state) end
  -- a run holding a slot of its task's concurrency limit leaves it once it ended or waits for
  -- a retry, a fair turn once it started; the next run is admitted now (admission.lua)
  leave_places(task_id, record, fields, before, state, ENDED[state])
  if ENDED[state] and not ENDED[before] then
    redis.call('ZREM', inflight, task_id)
    redis.call('DEL', alive)
    -- the delivery count guards a running task (and explains a dead letter): done with it
    if state == 'succeeded' then
      redis.call('HDEL', record, 'deliveries')
      fields['deliveries'] = nil
    end
    local name = fields['name'] or '?'
    redis.call('HINCRBY', stats, 'done:' .. name .. ':' .. state, 1)
    local created, started, finished = seconds(fields['created_at']), seconds(fields['started_at']),
      seconds(fields['finished_at'])
    local wait = started and created and math.max(0, started - created)
    if wait then observe('wait', name, wait) end
    if started and finished then observe('run', name, math.max(0, finished - started)) end
    count_minute(state, wait)
    redis.call('EXPIRE', stats, STATS_TTL)
  end
  fields['message'] = nil
  redis.call('PUBLISH', channel, cjson.encode(fields))
  -- its webhooks' deliveries, written in this script (webhooks.lua): an ended run always has them
  if ENDED[state] and not ENDED[before] then wh_task_ended(task_id, record, fields, state) end
  -- a workflow's node: its end takes the graph's edges here, in this script (workflow.lua)
  if ENDED[state] and not ENDED[before] and fields['workflow_id'] then wf_run_ended(record, fields, state) end
end

-- Mark the task as running on `node`; the pool process running it keeps the mark fresh.
local function mark_alive(node)
  redis.call('SET', alive, node, 'EX', HEARTBEAT_TTL)
end

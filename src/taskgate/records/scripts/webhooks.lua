-- Webhooks: the outbox. The script that ends a run (transition.lua's publish(), and workflow.lua's
-- wf_end_record for a node that will never run) or a workflow (workflow.lua's wf_finish) writes
-- one delivery per subscription that takes the event, in the same step, due now; workers'
-- keepers send them. With no subscription at all an end costs one GET (WH_COUNT).
-- Included by workflow.lua before its functions (so by every script that can end a run or a
-- workflow), after admission.lua (adm_now).
-- A subscription (records/webhooks.py) hears its owner's runs (WH_OF_OWNER_PREFIX .. owner) and,
-- an admin's made for all owners, every owner's (WH_ALL). It takes an event when `enabled` is
-- '1', its JSON `events` names the event's type or its family's '*', and, for a run's event, its
-- JSON `tasks` is absent or names the run's task. A delivery is the hash
-- WH_DELIVERY_PREFIX{<subscription id>:<msg id>}: msg_<task id>_<state> for a run's end,
-- msg_<workflow id>_<state> for a workflow's (msg_<workflow id>_<retries>_<state> once it was run
-- again). One that exists already (a duplicate end) is left as it is.
-- These scripts build these keys themselves (their names depend on stored ids): mirrors of
-- records/keys.py and records/webhooks.py, checked by tests/records/test_webhook_scripts.py.
local WH_PREFIX = 'taskgate:webhook:'
local WH_OF_OWNER_PREFIX = 'taskgate:webhooks-of:'
local WH_ALL = 'taskgate:webhooks-all'
local WH_COUNT = 'taskgate:webhooks-count'
local WH_DELIVERY_PREFIX = 'taskgate:delivery:'
local WH_DUE = 'taskgate:webhook-due'
local WH_WAKE = 'taskgate:webhook-wake'
local WH_DELIVERIES_PREFIX = 'taskgate:deliveries-of:'
local WH_DELIVERIES_KEPT = 1000  -- records/webhooks.py's DELIVERIES_KEPT
local WH_ANONYMOUS = 'anonymous'  -- the owner of a record without an owner field
-- A workflow event's payload: these fields of its hash (records/workflows.py's SUMMARY_FIELDS)
local WH_WF_SUMMARY = {'name', 'state', 'owner', 'created_at', 'finished_at', 'nodes', 'left', 'failed'}

-- True when no subscription exists: the one read an end makes then.
local function wh_idle()
  return (tonumber(redis.call('GET', WH_COUNT) or '0') or 0) <= 0
end

-- Whether a subscription's stored `events` and `tasks` take event `kind` ('task.failed') of
-- `family` ('task'), of a run of task `name` (nil: a workflow's event, which `tasks` leaves alone).
local function wh_wants(events, tasks, kind, family, name)
  local ok, patterns = pcall(cjson.decode, events or '[]')
  if not ok or type(patterns) ~= 'table' then return false end
  local hit = false
  for _, pattern in ipairs(patterns) do
    if pattern == kind or pattern == family .. '.*' then hit = true break end
  end
  if not hit or not name or not tasks then return hit end
  local fine, only = pcall(cjson.decode, tasks)
  if not fine or type(only) ~= 'table' then return true end  -- null: every task
  for _, task in ipairs(only) do
    if task == name then return true end
  end
  return false
end

-- The ids of the enabled subscriptions taking the event: `owner`'s (false or nil: the anonymous
-- owner's) and the all-owner ones, each once.
local function wh_takers(owner, kind, family, name)
  local ids = redis.call('SMEMBERS', WH_OF_OWNER_PREFIX .. (owner or WH_ANONYMOUS))
  for _, id in ipairs(redis.call('SMEMBERS', WH_ALL)) do ids[#ids + 1] = id end
  local seen, takers = {}, {}
  for _, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      local f = redis.call('HMGET', WH_PREFIX .. '{' .. id .. '}', 'enabled', 'events', 'tasks')
      if f[1] == '1' and wh_wants(f[2] or nil, f[3] or nil, kind, family, name) then takers[#takers + 1] = id end
    end
  end
  return takers
end

-- Write event `kind` (`msg_id`, its `payload` as JSON) for each subscription in `takers`, due now;
-- when nothing was due before, wake the deliverers (WH_WAKE: they claim at once instead of at
-- their next poll; while some are due they are busy claiming, and no message is sent).
local function wh_deliver(takers, msg_id, kind, payload)
  local now = adm_now()
  local head = redis.call('ZRANGE', WH_DUE, 0, 0, 'WITHSCORES')
  local idle = #head == 0 or tonumber(head[2]) > now
  for _, id in ipairs(takers) do
    local delivery = WH_DELIVERY_PREFIX .. '{' .. id .. ':' .. msg_id .. '}'
    if redis.call('EXISTS', delivery) == 0 then
      redis.call('HSET', delivery, 'webhook', id, 'msg_id', msg_id, 'type', kind, 'payload', payload,
                 'attempts', 0, 'state', 'pending', 'next_at', now, 'created_at', now)
      redis.call('ZADD', WH_DUE, now, delivery)
      local list = WH_DELIVERIES_PREFIX .. '{' .. id .. '}'
      redis.call('ZADD', list, now, delivery)
      redis.call('ZREMRANGEBYRANK', list, 0, -WH_DELIVERIES_KEPT - 1)
      if idle then
        redis.call('PUBLISH', WH_WAKE, '')
        idle = false
      end
    end
  end
end

-- Run `task_id` (record `record`) ended in `state`: its events. `fields`: the record as
-- publish() encodes it (nil: read here, only when someone subscribes).
local function wh_task_ended(task_id, record, fields, state)
  if wh_idle() then return end
  if not fields then
    local flat = redis.call('HGETALL', record)
    fields = {}
    for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
    fields['message'] = nil
  end
  local kind = 'task.' .. state
  local takers = wh_takers(fields['owner'], kind, 'task', fields['name'] or '?')
  if #takers > 0 then wh_deliver(takers, 'msg_' .. task_id .. '_' .. state, kind, cjson.encode(fields)) end
end

-- Workflow `workflow_id` (hash `wf`) ended in `state`: its events, its summary as payload (and,
-- when it was submitted traced, its span's `traceparent`: an attempt's span links to it; the
-- body sent is the summary alone).
local function wh_workflow_ended(wf, workflow_id, state)
  if wh_idle() then return end
  local f = redis.call('HMGET', wf, 'retries', 'traceparent', unpack(WH_WF_SUMMARY))
  local kind = 'workflow.' .. state
  local takers = wh_takers(f[5], kind, 'workflow', nil)  -- f[5]: the owner
  if #takers == 0 then return end
  local summary = {workflow_id = workflow_id}
  for i, name in ipairs(WH_WF_SUMMARY) do
    if f[i + 2] then summary[name] = f[i + 2] end
  end
  if f[2] and f[2] ~= '' then summary['traceparent'] = f[2] end
  local retries = tonumber(f[1] or '0') or 0
  local msg_id = 'msg_' .. workflow_id .. '_' .. state
  if retries > 0 then msg_id = 'msg_' .. workflow_id .. '_' .. retries .. '_' .. state end
  wh_deliver(takers, msg_id, kind, cjson.encode(summary))
end

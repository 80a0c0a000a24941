-- Workflows: a graph of runs whose edges are taken in the script that ends a run (transition.lua's
-- publish() calls wf_run_ended), exactly once, with no polling. Included after times.lua and
-- admission.lua (runs are released through its `dispatch`, so admission limits apply to nodes).
-- A workflow is the hash WF_PREFIX{<id>} (records/keys.py's `workflow`): name, owner, state
-- (running, succeeded, failed, cancelled), on_failure (stop, continue), nodes, left (nodes not
-- ended), failed, created_at and finished_at (ms), ttl and failure_ttl, order (JSON, the nodes in
-- topological order), sink (the node whose result is the workflow's, if one), seq; and per node
-- 'n:<node>:<field>': task (its run's task id; a map node's base id: item i runs as
-- <base>-<i>), name (the task), state (waiting, released, succeeded, failed, cancelled, skipped),
-- pending (parents not yet succeeded), children (JSON list); a map node also over and path (what it
-- maps), template and queue (its runs' message, with WF_ITEM_ID and WF_ITEM_IX to replace), lane,
-- declared, error (why it failed without running), and once expanded items, left and ok;
-- traceparent: the workflow's span, when it was submitted traced (its runs' records keep its trace).
-- These scripts build these keys themselves (names depend on stored ids): mirrors of
-- records/keys.py, checked by tests/records/test_scripts.py.
local WF_PREFIX = 'taskgate:wf:'
local WF_EVENTS_PREFIX = 'taskgate:wf-events:'
local TASK_INDEX = 'taskgate:index'
local TASKS_OF_OWNER_PREFIX = 'taskgate:index:'
local WF_ITEM_ID = 'tgitem0placeholder0id'  -- producer/workflows.py's ITEM_ID and ITEM_INDEX
local WF_ITEM_IX = 'tgitem0placeholder0ix'
local WF_MAX_ITEMS = 10000  -- workflow/spec.py's MAX_MAP_ITEMS
local WF_NODE_ENDED = {succeeded = true, failed = true, cancelled = true, skipped = true}
-- the outbox of webhook deliveries, written by wf_finish and wf_end_record (and publish())
--#include webhooks.lua

local function wf_key(workflow_id) return WF_PREFIX .. '{' .. workflow_id .. '}' end
local function wf_record(task_id) return RECORD_PREFIX .. '{' .. task_id .. '}' end
local function wf_field(node, name) return 'n:' .. node .. ':' .. name end
-- the trace id of the workflow's traceparent ('00-<trace id>-<span id>-<flags>'), or nil
local function wf_trace_id(wf)
  local parent = redis.call('HGET', wf, 'traceparent')
  if parent and #parent >= 35 then return string.sub(parent, 4, 35) end
  return nil
end

-- Tell the workflow's watchers what changed (GET /workflows/{id}/events reads the rest).
local function wf_announce(wf, workflow_id, node, node_state)
  local f = redis.call('HMGET', wf, 'state', 'left', 'nodes')
  local seq = redis.call('HINCRBY', wf, 'seq', 1)
  redis.call('PUBLISH', WF_EVENTS_PREFIX .. '{' .. workflow_id .. '}', cjson.encode({
    workflow_id = workflow_id, state = f[1], left = tonumber(f[2]), nodes = tonumber(f[3]), seq = seq,
    node = node, node_state = node_state}))
end

-- A new run, for live lists (GET /events), as enqueue.lua announces a submitted one.
local function wf_born(task_id, name, created, owner, workflow_id, node)
  local born = {name = name, state = 'queued', created_at = created, attempts = '0', seq = '0',
                workflow_id = workflow_id, node = node}
  if owner then born['owner'] = owner end
  redis.call('PUBLISH', EVENTS_PREFIX .. '{' .. task_id .. '}', cjson.encode(born))
end

-- Every run of node `node` (a map node's items once expanded), as task ids.
local function wf_runs(wf, node)
  local f = redis.call('HMGET', wf, wf_field(node, 'task'), wf_field(node, 'template'), wf_field(node, 'items'))
  if not f[2] then return {f[1]} end
  local runs = {}
  for i = 0, (tonumber(f[3] or '0') or 0) - 1 do runs[#runs + 1] = f[1] .. '-' .. i end
  return runs
end

-- Keep node `node`'s run records (no TTL) while the workflow runs again.
local function wf_keep_runs(wf, node)
  for _, task_id in ipairs(wf_runs(wf, node)) do redis.call('PERSIST', wf_record(task_id)) end
end

-- The workflow ended when no node is left: its state, and every record's TTL from now on.
local function wf_finish(wf, workflow_id, now)
  local f = redis.call('HMGET', wf, 'state', 'failed', 'ttl', 'failure_ttl', 'order', 'cancel')
  local wf_state = f[1]
  if wf_state == 'running' then
    wf_state = (f[6] == '1' and 'cancelled') or (tonumber(f[2] or '0') > 0 and 'failed') or 'succeeded'
  end
  local ttl = (wf_state == 'succeeded') and f[3] or f[4]
  redis.call('HSET', wf, 'state', wf_state, 'finished_at', now)
  for _, node in ipairs(cjson.decode(f[5])) do
    for _, task_id in ipairs(wf_runs(wf, node)) do redis.call('EXPIRE', wf_record(task_id), ttl) end
  end
  redis.call('EXPIRE', wf, ttl)
  wh_workflow_ended(wf, workflow_id, wf_state)  -- its webhooks' deliveries (webhooks.lua)
end

-- A record of this workflow's that will never run ends `cancelled`, saying why.
local function wf_end_record(task_id, why, now)
  local record = wf_record(task_id)
  local before = redis.call('HGET', record, 'state')
  if not before or WF_NODE_ENDED[before] or before == 'expired' then return end
  redis.call('HSET', record, 'state', 'cancelled', 'finished_at', now, 'skipped', why)
  leave_wait(task_id, record)
  redis.call('HDEL', record, 'waiting_for', 'message', 'queue')
  announce(record, task_id)
  wh_task_ended(task_id, record, nil, 'cancelled')
end

local wf_node_done  -- defined below (a node's end releases or skips others)

-- Nodes `nodes` will never run: skipped, their records ended; each counts as ended.
local function wf_skip(wf, workflow_id, nodes, why, now)
  for _, node in ipairs(nodes) do
    if redis.call('HGET', wf, wf_field(node, 'state')) == 'waiting' then
      local task = redis.call('HGET', wf, wf_field(node, 'task'))
      if not redis.call('HGET', wf, wf_field(node, 'template')) then wf_end_record(task, why, now) end
      wf_node_done(wf, workflow_id, node, 'skipped', now)
    end
  end
end

-- The waiting nodes downstream of `node`.
local function wf_downstream(wf, node)
  local seen, out, queue = {[node] = true}, {}, {node}
  while #queue > 0 do
    local at = table.remove(queue)
    for _, child in ipairs(cjson.decode(redis.call('HGET', wf, wf_field(at, 'children')) or '[]')) do
      if not seen[child] then
        seen[child] = true
        out[#out + 1] = child
        queue[#queue + 1] = child
      end
    end
  end
  return out
end

-- Follow a dotted `path` (object keys, list indexes from 0) into a decoded JSON value.
local function wf_follow(value, path)
  if path == nil or path == '' then return value end
  for part in string.gmatch(path, '[^.]+') do
    if type(value) ~= 'table' then return nil end
    local index = tonumber(part)
    local next_value = value[part]
    if next_value == nil and index then next_value = value[index + 1] end
    value = next_value
  end
  return value
end

-- How many items node `over` (with `path`) yields to map over; nil and why when it is no list.
local function wf_count(wf, over, path)
  local base = redis.call('HGET', wf, wf_field(over, 'task'))
  if redis.call('HGET', wf, wf_field(over, 'template')) then  -- a map node: its list of results
    if path and path ~= '' then return nil, 'a path into a map node\'s results' end
    return tonumber(redis.call('HGET', wf, wf_field(over, 'items')) or '0')
  end
  local ok, value = pcall(cjson.decode, redis.call('HGET', wf_record(base), 'result') or 'null')
  if not ok then return nil, 'a result that is not JSON' end
  value = wf_follow(value, path)
  if type(value) ~= 'table' or (next(value) ~= nil and value[1] == nil) then
    return nil, 'not a list'
  end
  return #value
end

-- Release a map node: one run per item of the list it maps over, each through dispatch.
local function wf_expand(wf, workflow_id, node, now)
  local f = redis.call('HMGET', wf, wf_field(node, 'over'), wf_field(node, 'path'), wf_field(node, 'task'),
                       wf_field(node, 'template'), wf_field(node, 'queue'), wf_field(node, 'name'),
                       wf_field(node, 'lane'), 'owner')
  local count, why = wf_count(wf, f[1], f[2])
  if count and count > WF_MAX_ITEMS then count, why = nil, count .. ' items, more than ' .. WF_MAX_ITEMS end
  if not count then
    redis.call('HSET', wf, wf_field(node, 'error'), 'cannot map over node ' .. f[1] .. '\'s result: ' .. why)
    return wf_node_done(wf, workflow_id, node, 'failed', now)
  end
  redis.call('HSET', wf, wf_field(node, 'items'), count, wf_field(node, 'left'), count, wf_field(node, 'ok'), 0)
  if count == 0 then return wf_node_done(wf, workflow_id, node, 'succeeded', now) end
  local name, owner, trace_id = f[6], f[8], wf_trace_id(wf)
  for i = 0, count - 1 do
    local task_id = f[3] .. '-' .. i
    local record = wf_record(task_id)
    local message = string.gsub(string.gsub(f[4], WF_ITEM_ID, task_id), WF_ITEM_IX, tostring(i))
    redis.call('HSET', record, 'name', name, 'state', 'queued', 'created_at', now, 'attempts', 0,
               'workflow_id', workflow_id, 'node', node, 'item', i, 'lane', f[7] or '')
    if owner then redis.call('HSET', record, 'owner', owner) end
    if trace_id then redis.call('HSET', record, 'trace_id', trace_id) end
    wf_born(task_id, name, now, owner, workflow_id, node)
    redis.call('ZADD', TASK_INDEX, now / 1000, task_id)
    if owner then redis.call('ZADD', TASKS_OF_OWNER_PREFIX .. owner, now / 1000, task_id) end
    dispatch(name, task_id, record, f[5], message, f[7] or '', '?', true)
  end
end

-- Release node `node`, whose parents all succeeded: its run goes through admission to its queue.
local function wf_release(wf, workflow_id, node, now)
  redis.call('HSET', wf, wf_field(node, 'state'), 'released')
  if redis.call('HGET', wf, wf_field(node, 'template')) then return wf_expand(wf, workflow_id, node, now) end
  local task_id = redis.call('HGET', wf, wf_field(node, 'task'))
  local record = wf_record(task_id)
  local f = redis.call('HMGET', record, 'name', 'message', 'queue', 'lane', 'state')
  if f[5] ~= 'queued' or not f[2] then return end  -- cancelled meanwhile: its end counts it
  redis.call('HDEL', record, 'waiting_for')
  if not dispatch(f[1], task_id, record, f[3] or '', f[2], f[4] or '', '?', true) and (f[3] or '') ~= '' then
    redis.call('HDEL', record, 'message', 'queue')  -- pushed: the queue has it
  end
  announce(record, task_id)
end

-- Write node `n` of a plan (workflow_submit.lua's ARGV, see there) as waiting for its parents:
-- its fields in the workflow's hash and, for a task node, its run's record (`queued`, waiting
-- for its parents unless it has none, its message kept until it is released), indexed in
-- `indexes`. `created`: now, in ms. Returns true when it has no parent (release it).
local function wf_put_node(wf, workflow_id, n, owner, created, indexes)
  local node = n['node']
  local put = {wf_field(node, 'task'), n['task'], wf_field(node, 'name'), n['name'],
               wf_field(node, 'state'), 'waiting', wf_field(node, 'pending'), n['pending'],
               wf_field(node, 'children'), n['children']}
  redis.call('HDEL', wf, wf_field(node, 'items'), wf_field(node, 'left'), wf_field(node, 'ok'),
             wf_field(node, 'error'))
  if n['template'] then
    for _, part in ipairs({'template', 'queue', 'lane', 'over', 'path', 'argument'}) do
      put[#put + 1] = wf_field(node, part)
      put[#put + 1] = n[part]
    end
  else
    local own = {'name', n['name'], 'state', 'queued', 'created_at', created, 'attempts', 0,
                 'workflow_id', workflow_id, 'node', node, 'args', n['args'], 'message', n['message'],
                 'queue', n['queue'], 'lane', n['lane']}
    if owner then own[#own + 1] = 'owner'; own[#own + 1] = owner end
    local trace_id = wf_trace_id(wf)
    if trace_id then own[#own + 1] = 'trace_id'; own[#own + 1] = trace_id end
    if n['pending'] > 0 then own[#own + 1] = 'waiting_for'; own[#own + 1] = 'parents' end
    redis.call('HSET', wf_record(n['task']), unpack(own))
    wf_born(n['task'], n['name'], created, owner, workflow_id, node)
    for _, index in ipairs(indexes) do redis.call('ZADD', index, created / 1000, n['task']) end
  end
  redis.call('HSET', wf, unpack(put))
  declare_limits(n['name'], n['declared'])
  return n['pending'] == 0
end

-- Node `node` ended (`outcome`: succeeded, failed, cancelled, skipped), once: release the
-- children it was the last parent of, or skip what its failure stops; end the workflow when no
-- node is left.
wf_node_done = function(wf, workflow_id, node, outcome, now)
  if WF_NODE_ENDED[redis.call('HGET', wf, wf_field(node, 'state')) or ''] then return end
  redis.call('HSET', wf, wf_field(node, 'state'), outcome)
  redis.call('HINCRBY', wf, 'left', -1)
  local wf_state = redis.call('HGET', wf, 'state')
  if outcome == 'succeeded' then
    for _, child in ipairs(cjson.decode(redis.call('HGET', wf, wf_field(node, 'children')) or '[]')) do
      local pending = redis.call('HINCRBY', wf, wf_field(child, 'pending'), -1)
      if pending <= 0 and wf_state == 'running'
          and redis.call('HGET', wf, wf_field(child, 'state')) == 'waiting' then
        wf_release(wf, workflow_id, child, now)
      end
    end
  elseif outcome ~= 'skipped' then
    redis.call('HINCRBY', wf, 'failed', 1)
    local why = 'node ' .. node .. ' ' .. outcome
    if redis.call('HGET', wf, 'on_failure') == 'continue' then
      wf_skip(wf, workflow_id, wf_downstream(wf, node), why, now)
    else
      if wf_state == 'running' then redis.call('HSET', wf, 'state', 'failed') end
      wf_skip(wf, workflow_id, cjson.decode(redis.call('HGET', wf, 'order')), why, now)
    end
  end
  if redis.call('HGET', wf, 'left') == '0' and not redis.call('HGET', wf, 'finished_at') then
    wf_finish(wf, workflow_id, now)
  end
  wf_announce(wf, workflow_id, node, outcome)
end

-- A run ended in `state` (transition.lua's publish(), with the record's `fields`): its node's
-- edges are taken here, in the same script. Its record is kept while the workflow runs.
local function wf_run_ended(record, fields, state)
  local workflow_id, node = fields['workflow_id'], fields['node']
  if not workflow_id or not node then return end
  local wf = wf_key(workflow_id)
  if redis.call('EXISTS', wf) == 0 then return end
  local now = adm_now()
  if not redis.call('HGET', wf, 'finished_at') then redis.call('PERSIST', record) end
  if fields['item'] then  -- one run of a map node: the node ends with its last run
    if state == 'succeeded' then redis.call('HINCRBY', wf, wf_field(node, 'ok'), 1) end
    if redis.call('HINCRBY', wf, wf_field(node, 'left'), -1) > 0 then
      return wf_announce(wf, workflow_id, node, 'released')
    end
    local f = redis.call('HMGET', wf, wf_field(node, 'ok'), wf_field(node, 'items'), 'cancel')
    local outcome = (f[1] == f[2] and 'succeeded') or (f[3] == '1' and 'cancelled') or 'failed'
    return wf_node_done(wf, workflow_id, node, outcome, now)
  end
  local outcome = state
  if state == 'expired' then outcome = 'failed' end
  if state == 'cancelled' and fields['skipped'] then outcome = 'skipped' end
  wf_node_done(wf, workflow_id, node, outcome, now)
end

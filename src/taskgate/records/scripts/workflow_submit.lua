-- API or library: record a validated workflow and release its roots, all at once. Writes the
-- workflow's hash (see workflow.lua), a record for every task node (`queued`; a node with parents
-- waits for them: `waiting_for` 'parents', its message kept in the record until it is released),
-- the indexes, then sends each root on its way through admission's `dispatch` (a map node at the
-- root is expanded). Returns 'created', or 'exists' when the workflow is there already (a retried
-- call that ran).
-- KEYS: the workflow, the workflow index, the owner's workflow index ('' for the anonymous owner),
-- the task index, the owner's task index (''). ARGV: workflow id, now (s), ttl, failure ttl,
-- horizon (s: index entries older go), the plan (JSON: name, owner ('' for none), on_failure,
-- order, sink and traceparent (the workflow's span, '' untraced), and per node in `nodes`: node, name, task, pending, children (JSON text), and a
-- task node's message, queue, lane, declared, args (JSON text), a map node's template, queue,
-- lane, declared, over, path).
--#include times.lua
--#include admission.lua
--#include workflow.lua
local wf, wf_index, owner_wf_index, index, owner_index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local workflow_id, now, ttl, failure_ttl, horizon = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local plan = cjson.decode(ARGV[6])

if redis.call('EXISTS', wf) == 1 then return 'exists' end
local created = ms(now)
local owner = plan['owner']
local fields = {'name', plan['name'], 'state', 'running', 'on_failure', plan['on_failure'], 'nodes', #plan['nodes'],
                'left', #plan['nodes'], 'failed', 0, 'created_at', created, 'ttl', ttl, 'failure_ttl', failure_ttl,
                'order', plan['order'], 'spec', plan['spec'], 'seq', 0}
if owner ~= '' then fields[#fields + 1] = 'owner'; fields[#fields + 1] = owner end
if plan['sink'] ~= '' then fields[#fields + 1] = 'sink'; fields[#fields + 1] = plan['sink'] end
if (plan['traceparent'] or '') ~= '' then
  fields[#fields + 1] = 'traceparent'; fields[#fields + 1] = plan['traceparent']
end
redis.call('HSET', wf, unpack(fields))

local indexes = {index}
if owner_index ~= '' then indexes[2] = owner_index end
local roots = {}
for _, n in ipairs(plan['nodes']) do
  if wf_put_node(wf, workflow_id, n, owner ~= '' and owner or nil, created, indexes) then
    roots[#roots + 1] = n['node']
  end
end
for _, key in ipairs({index, owner_index}) do
  if key ~= '' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', horizon)
    redis.call('EXPIRE', key, ttl)
  end
end
for _, key in ipairs({wf_index, owner_wf_index}) do
  if key ~= '' then
    redis.call('ZADD', key, now, workflow_id)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', horizon)
    redis.call('EXPIRE', key, ttl)
  end
end
for _, node in ipairs(roots) do wf_release(wf, workflow_id, node, created) end
wf_announce(wf, workflow_id, nil, 'running')
return 'created'

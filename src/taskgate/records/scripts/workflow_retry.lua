-- API: run an ended workflow's nodes that did not succeed (failed, cancelled, skipped) again,
-- each as a new run, keeping the results of those that succeeded (their records lose their TTL
-- again while it runs). The plan holds exactly the nodes to run again, each with the parents it
-- still waits for; the ones waiting for none are released now.
-- Returns 'retried', 'missing', 'already:<state>' (running, or it succeeded), or 'changed'
-- when the nodes not succeeded are not the plan's (another retry went first).
-- KEYS: the workflow, the task index, the owner's task index ('' for the anonymous owner).
-- ARGV: its id, now (s), the plan (JSON: `nodes` as workflow_submit.lua's).
--#include times.lua
--#include admission.lua
--#include workflow.lua
local wf, index, owner_index = KEYS[1], KEYS[2], KEYS[3]
local workflow_id, now = ARGV[1], ARGV[2]
local plan = cjson.decode(ARGV[3])

local wf_state = redis.call('HGET', wf, 'state')
if not wf_state then return 'missing' end
if not redis.call('HGET', wf, 'finished_at') or wf_state == 'succeeded' then return 'already:' .. wf_state end
local again = {}
for _, n in ipairs(plan['nodes']) do again[n['node']] = true end
local order = cjson.decode(redis.call('HGET', wf, 'order'))
for _, node in ipairs(order) do
  local succeeded = redis.call('HGET', wf, wf_field(node, 'state')) == 'succeeded'
  if succeeded == (again[node] == true) then return 'changed' end
end

redis.call('HSET', wf, 'state', 'running', 'left', #plan['nodes'], 'failed', 0)
redis.call('HDEL', wf, 'finished_at', 'cancel')
redis.call('HINCRBY', wf, 'retries', 1)
redis.call('PERSIST', wf)
for _, node in ipairs(order) do  -- the results the new runs may need, kept while it runs
  if not again[node] then wf_keep_runs(wf, node) end
end
local created = ms(now)
local indexes = {index}
if owner_index ~= '' then indexes[2] = owner_index end
local owner = redis.call('HGET', wf, 'owner')
local ready = {}
for _, n in ipairs(plan['nodes']) do
  if wf_put_node(wf, workflow_id, n, owner, created, indexes) then ready[#ready + 1] = n['node'] end
end
for _, node in ipairs(ready) do wf_release(wf, workflow_id, node, created) end
wf_announce(wf, workflow_id, nil, 'running')
return 'retried'

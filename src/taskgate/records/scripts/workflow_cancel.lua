-- API: cancel a workflow. Nothing more is released, every node still waiting is skipped (its
-- record ends `cancelled`, `skipped` 'workflow cancelled'), and the workflow's state becomes
-- `cancelled` (one already `failed` by a stopping failure stays so). The caller then cancels the
-- runs already released, each by cancel.lua (whose end takes the graph's edges as any end does).
-- Returns 'cancelled', 'missing', or 'already:<state>' when it has ended.
-- KEYS: the workflow. ARGV: its id.
--#include times.lua
--#include admission.lua
--#include workflow.lua
local wf = KEYS[1]
local workflow_id = ARGV[1]

local wf_state = redis.call('HGET', wf, 'state')
if not wf_state then return 'missing' end
if redis.call('HGET', wf, 'finished_at') then return 'already:' .. wf_state end
redis.call('HSET', wf, 'cancel', '1')
if wf_state == 'running' then redis.call('HSET', wf, 'state', 'cancelled') end
wf_skip(wf, workflow_id, cjson.decode(redis.call('HGET', wf, 'order')), 'workflow cancelled', adm_now())
wf_announce(wf, workflow_id, nil, 'cancelled')
return 'cancelled'

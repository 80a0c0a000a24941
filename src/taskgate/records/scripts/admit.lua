-- Worker keeper: admit the runs whose lane's rate limit now lets them go. KEYS: ADMIT_DUE (the
-- other admission keys depend on the lanes: see admission.lua). ARGV: how many due lanes to
-- take at most. Each due member (JSON [task name, lane]) is taken off the set, due by Redis's
-- clock (so one keeper admits it, whatever the hosts' clocks say), and its concurrency key's
-- lanes are admitted in turn (admission.lua's `admit_key`, which notes a lane held back
-- again). Returns {the count admitted, ms until the next lane is due (-1: none)}, so keepers
-- wake when a rate lets the next run go rather than at their next pass.
--#include admission.lua
local due_set = KEYS[1]
local batch = tonumber(ARGV[1])
local now = adm_now()
local admitted = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', due_set, '-inf', now, 'LIMIT', 0, batch)) do
  redis.call('ZREM', due_set, member)
  local pair = cjson.decode(member)
  local name, lane = pair[1], pair[2]
  local hold = string.find(name, FAIR_GROUP, 1, true) == 1 and 'turn' or 'slot'
  admitted = admitted + admit_key(name, cjson.decode(lane)[2], now, conf_of(name), hold)
end
local next_due = redis.call('ZRANGE', due_set, 0, 0, 'WITHSCORES')
if #next_due == 0 then return {admitted, -1} end
return {admitted, math.max(0, math.ceil(tonumber(next_due[2]) - adm_now()))}

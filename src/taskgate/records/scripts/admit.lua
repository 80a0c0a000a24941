-- Worker keeper: admit the runs whose lane's rate limit now lets them go. ARGV: now (ms), then
-- the members of ADMIT_DUE (JSON [task name, lane]) the caller read as due; each one still due
-- is taken off the set (so one keeper admits it) and its concurrency key's lanes are admitted
-- in turn (admission.lua's `admit_key`, which notes a lane held back again). KEYS: ADMIT_DUE
-- (the other admission keys depend on the lanes: see admission.lua). Returns the count admitted.
--#include admission.lua
local due_set = KEYS[1]
local now = tonumber(ARGV[1])
local admitted = 0
for i = 2, #ARGV do
  local member = ARGV[i]
  local due = redis.call('ZSCORE', due_set, member)
  if due and tonumber(due) <= now then
    redis.call('ZREM', due_set, member)
    local pair = cjson.decode(member)
    local name, lane = pair[1], pair[2]
    local ck = cjson.decode(lane)[2]
    admitted = admitted + admit_key(name, ck, adm_now(), limits_of(name, nil))
  end
end
return admitted

-- Worker: a running task's progress (JSON), published. Only while it is `started`: a late write
-- (after its end, or once it went back to its queue) changes nothing.
-- Returns {1, 'started'}, {0, the state found} when it is not started, or nil without a record.
--#include transition.lua
local progress = ARGV[2]

if not before then return false end
if before ~= 'started' then return {0, before} end
redis.call('HSET', record, 'progress', progress)
publish()
return {1, before}

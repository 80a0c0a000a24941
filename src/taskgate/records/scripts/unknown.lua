-- Worker that does not know the task: remember when a worker first lacked it.
-- Returns false without a record, else {state, first time (ms)}.
local record = KEYS[1]
local now_ms = ARGV[1]

if redis.call('EXISTS', record) == 0 then return false end
redis.call('HSETNX', record, 'unregistered_since', now_ms)
return redis.call('HMGET', record, 'state', 'unregistered_since')

-- Worker or API: set record fields and publish. A record that is now ended expires in `ttl`
-- seconds (unless 0: keep its TTL); one that is not has none. Returns the new state, or false
-- when there is no record.
--#include transition.lua
local ttl = ARGV[2]  -- then ARGV[3], ARGV[4]...: field, value, field, value...

if redis.call('EXISTS', record) == 0 then return false end
redis.call('HSET', record, unpack(ARGV, 3))
if not ENDED[redis.call('HGET', record, 'state')] then redis.call('PERSIST', record)
elseif ttl ~= '0' then redis.call('EXPIRE', record, ttl) end
publish()
return redis.call('HGET', record, 'state')

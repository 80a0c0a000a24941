-- API: create or change a webhook subscription (records/webhooks.py), keeping the sets that find
-- it, and their count, in step with it.
-- KEYS: the subscription, its owner's set, the all-owner set, the set of every subscription,
-- the count.
-- ARGV: its id; mode ('create': make it, unless its owner has `limit` already; 'update': change
-- it if it exists; 'rotate': as update, its current secret kept first as previous_secret); the
-- limit; then field/value pairs to set, '', and fields to delete.
-- Returns 'created', 'updated', '#exists', '#missing' or '#limit' (nothing changed then).
local webhook, mine, all, every, count = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local webhook_id, mode, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])

local exists = redis.call('EXISTS', webhook) == 1
if exists and mode == 'create' then return '#exists' end
if not exists and mode ~= 'create' then return '#missing' end
if mode == 'create' and limit > 0 and redis.call('SCARD', mine) >= limit then return '#limit' end
if mode == 'rotate' then
  local current = redis.call('HGET', webhook, 'secret')
  if current then redis.call('HSET', webhook, 'previous_secret', current) end
end
local i = 4
while i <= #ARGV and ARGV[i] ~= '' do
  redis.call('HSET', webhook, ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = i + 1, #ARGV do redis.call('HDEL', webhook, ARGV[j]) end
redis.call('HINCRBY', webhook, 'seq', 1)
if mode ~= 'create' then return 'updated' end
redis.call('SADD', mine, webhook_id)
redis.call('SADD', every, webhook_id)
if redis.call('HGET', webhook, 'all') == '1' then redis.call('SADD', all, webhook_id) end
redis.call('INCR', count)
return 'created'

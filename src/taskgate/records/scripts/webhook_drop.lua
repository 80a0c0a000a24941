-- API: delete a webhook subscription: out of every set that finds it (no run's end writes it a
-- delivery from now on), the count down, its listed deliveries out of the due set.
-- KEYS: the subscription, its owner's set, the all-owner set, the set of every subscription,
-- the count, the due set, its deliveries.
-- ARGV: its id.
-- Returns the keys of its listed deliveries (the caller deletes them), or nil when it is gone.
local webhook, mine, all, every, count, due, deliveries =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local webhook_id = ARGV[1]

if redis.call('EXISTS', webhook) == 0 then return false end
redis.call('DEL', webhook)
redis.call('SREM', mine, webhook_id)
redis.call('SREM', all, webhook_id)
if redis.call('SREM', every, webhook_id) == 1 and redis.call('DECR', count) < 0 then
  redis.call('SET', count, 0)
end
local listed = redis.call('ZRANGE', deliveries, 0, -1)
for i = 1, #listed, 500 do
  redis.call('ZREM', due, unpack(listed, i, math.min(i + 499, #listed)))
end
redis.call('DEL', deliveries)
return listed

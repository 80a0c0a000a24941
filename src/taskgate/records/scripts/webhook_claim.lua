-- Claim deliveries for one sender (a worker's keeper, worker/webhooks.py): up to `limit` of those
-- due by now (Redis's clock, ms) in the due set, earliest first. Each claimed one's score moves to
-- now + `lease` ms: should its sender die before it records the attempt (webhook_result.lua), the
-- delivery is due again then, for any keeper. Which claimed ones it sends at once (a subscription
-- at its in-flight limit) is the sender's business: it gives the others back.
-- Returns the claimed delivery keys.
local due = KEYS[1]
local limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local claimed = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(claimed) do
  redis.call('ZADD', due, 'XX', now + lease, member)
end
return claimed

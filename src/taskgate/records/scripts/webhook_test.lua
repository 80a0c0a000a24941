-- API: POST /webhooks/{id}/test: write one `webhook.test` delivery for a subscription, due now,
-- with the fields webhooks.lua gives a run's (the sender sends it like any other, whatever the
-- subscription's events).
-- KEYS: the subscription, the delivery, the due set, the subscription's deliveries.
-- ARGV: the subscription's id, the msg id, the type, the payload (JSON), how many deliveries the
-- list keeps (the newest).
-- Returns 'created'; 'missing' (no such subscription), 'disabled' (it is: the sender would drop
-- the event unsent) or 'exists' (that msg id was written already): nothing written then.
local webhook, delivery, due, deliveries = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local webhook_id, msg_id, kind, payload = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local kept = tonumber(ARGV[5])

if redis.call('EXISTS', webhook) == 0 then return 'missing' end
if redis.call('HGET', webhook, 'enabled') ~= '1' then return 'disabled' end
if redis.call('EXISTS', delivery) == 1 then return 'exists' end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('HSET', delivery, 'webhook', webhook_id, 'msg_id', msg_id, 'type', kind, 'payload', payload,
           'attempts', 0, 'state', 'pending', 'next_at', now, 'created_at', now)
redis.call('ZADD', due, now, delivery)
redis.call('ZADD', deliveries, now, delivery)
redis.call('ZREMRANGEBYRANK', deliveries, 0, -kept - 1)
return 'created'

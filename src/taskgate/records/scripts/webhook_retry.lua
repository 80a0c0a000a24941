-- API: POST /webhooks/{id}/deliveries/{delivery_id}/retry: a delivery not delivered (`failed`, or
-- `pending` waiting for its next attempt) is `pending` and due now again. Its attempts count on:
-- should this attempt fail too, the next waits the schedule's delay after that many attempts,
-- or the delivery fails at once when the schedule is spent (webhook_result.lua, worker/webhooks.py).
-- KEYS: the delivery, its subscription, the due set.
-- ARGV: the subscription's id (the delivery must be that subscription's).
-- Returns 'due'; or, nothing done: 'missing' (no such delivery of that subscription),
-- 'delivered', 'disabled' (the subscription is: the sender would drop it unsent), or
-- 'sending:<ms>' (a sender claimed it and an attempt is under way; its claim lasts until <ms>:
-- a claimed delivery's due score, moved on by webhook_claim.lua, is past its `next_at`).
local delivery, webhook, due = KEYS[1], KEYS[2], KEYS[3]
local webhook_id = ARGV[1]

local state = redis.call('HGET', delivery, 'state')
if not state or redis.call('HGET', delivery, 'webhook') ~= webhook_id then return 'missing' end
if state == 'delivered' then return 'delivered' end
if redis.call('HGET', webhook, 'enabled') ~= '1' then return 'disabled' end
if state == 'pending' then
  local score = tonumber(redis.call('ZSCORE', due, delivery) or '')
  local next_at = tonumber(redis.call('HGET', delivery, 'next_at') or '')
  if score and next_at and score > next_at then return 'sending:' .. string.format('%d', score) end
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('HSET', delivery, 'state', 'pending', 'next_at', now)
redis.call('PERSIST', delivery)
redis.call('ZADD', due, now, delivery)
return 'due'

-- Record one attempt of a delivery (worker/webhooks.py), or drop a delivery its subscription no
-- longer takes. `outcome`:
--   delivered  the receiver answered 2xx: the delivery is `delivered`, and its subscription's
--              failing streak (`failing_since`) ends;
--   gone       it answered 410 Gone: the subscription is disabled (`reason`), the delivery `failed`;
--   error      any other answer, a timeout, a refused or failed connection: the next attempt is due
--              in `retry` ms ('' when the schedule is spent, or the subscription is gone or
--              disabled: the delivery is `failed`); an enabled subscription's failing streak
--              starts now if it has none, and one older than `streak` ms disables it
--              (`reason`) and fails the delivery;
--   dropped    not sent: the subscription is gone or disabled (`error` says which); `failed`.
-- A delivery ended (`delivered`, `failed`) leaves the due set and expires in `ttl` s. Counts each
-- outcome in the stats (`webhook:<outcome>`, the metric taskgate_webhook_deliveries_total).
-- Returns the outcome: delivered, gone, retrying, failed, disabled (the streak's end), dropped;
-- `missing` (no such delivery) or the state of one already ended (a late duplicate: nothing done).
local delivery, webhook, due, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local outcome, status, error_text, retry = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, streak, reason = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]

-- Mirror of a Python constant (taskgate.constants.STATS_TTL; tests/records check it).
local STATS_TTL = 2592000

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)

local state = redis.call('HGET', delivery, 'state')
if not state then
  redis.call('ZREM', due, delivery)
  return 'missing'
end
if state ~= 'pending' then
  redis.call('ZREM', due, delivery)
  return state
end

local function count(said)
  redis.call('HINCRBY', stats, 'webhook:' .. said, 1)
  redis.call('EXPIRE', stats, STATS_TTL)
  return said
end

local function finish(said, final)
  redis.call('HSET', delivery, 'state', final)
  redis.call('HDEL', delivery, 'next_at')
  redis.call('ZREM', due, delivery)
  redis.call('EXPIRE', delivery, ttl)
  return count(said)
end

local function disable()
  redis.call('HSET', webhook, 'enabled', '0', 'disabled_reason', reason)
  redis.call('HINCRBY', webhook, 'seq', 1)
end

local exists = redis.call('EXISTS', webhook) == 1

if outcome == 'dropped' then
  redis.call('HSET', delivery, 'last_error', error_text)
  return finish('dropped', 'failed')
end

redis.call('HINCRBY', delivery, 'attempts', 1)
redis.call('HSET', delivery, 'last_at', now)
if status ~= '' then redis.call('HSET', delivery, 'last_status', status)
else redis.call('HDEL', delivery, 'last_status') end
if error_text ~= '' then redis.call('HSET', delivery, 'last_error', error_text)
else redis.call('HDEL', delivery, 'last_error') end

if outcome == 'delivered' then
  if exists then redis.call('HDEL', webhook, 'failing_since') end
  return finish('delivered', 'delivered')
end
if outcome == 'gone' then
  if exists then disable() end
  return finish('gone', 'failed')
end

-- a failed attempt
local enabled = exists and redis.call('HGET', webhook, 'enabled') == '1'
if enabled then
  local since = tonumber(redis.call('HGET', webhook, 'failing_since') or '')
  if not since then
    redis.call('HSET', webhook, 'failing_since', now)
  elseif now - since > streak then
    disable()
    return finish('disabled', 'failed')
  end
end
if retry ~= '' and enabled then
  local at = now + tonumber(retry)
  redis.call('HSET', delivery, 'next_at', at)
  redis.call('ZADD', due, at, delivery)
  return count('retrying')
end
return finish('failed', 'failed')

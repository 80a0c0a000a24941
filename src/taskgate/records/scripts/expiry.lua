-- Shared by the scripts that end a run past its expiry (start.lua, expire.lua), included after
-- transition.lua. A record's `expires_at` (ms) is its expiry: a run not started by then never
-- runs, and ends `expired`.

-- A stored time (ms since the epoch) in ISO 8601, UTC, to the second (Redis's Lua has no
-- os.date): Howard Hinnant's days-to-civil algorithm.
local function iso(stored)
  local t = math.floor(tonumber(stored) / 1000)
  local z = math.floor(t / 86400) + 719468
  local rest = t - math.floor(t / 86400) * 86400
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02dZ', year, month, day, math.floor(rest / 3600),
                       math.floor(rest / 60) % 60, rest % 60)
end

-- Whether a stored expiry (ms, or nil for none) is at or before `now` (seconds).
local function past_expiry(expires_at, now)
  return expires_at ~= nil and expires_at ~= false and tonumber(expires_at) <= tonumber(now) * 1000
end

-- End the run `expired` at `now` (seconds): its error says when it expired; nothing of it
-- waits any more (a parked message, a retry time, a wait for admission); the record expires in
-- `ttl` seconds, as a cancelled one does.
local function end_expired(expires_at, now, ttl)
  local error = cjson.encode({type = 'Expired', retryable = false,
    message = 'not started before its expiry (' .. iso(expires_at) .. '): it will never run'})
  redis.call('HSET', record, 'state', 'expired', 'finished_at', ms(now), 'error', error)
  leave_wait(task_id, record)
  redis.call('HDEL', record, 'next_attempt_at', 'message', 'queue', 'waiting_for')
  redis.call('EXPIRE', record, ttl)
  publish()
end

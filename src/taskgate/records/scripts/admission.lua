-- Admission: the one way a run reaches its queue. A run of a task with no limits is pushed at
-- once (one HGET more than a bare push); a run of a limited task goes when its limits let it,
-- or waits here, in taskgate's Redis (its record `queued`, `waiting_for` 'rate' or 'slot', its
-- message in the record), and is pushed by the script that frees its way: an ending run's
-- script frees a slot and admits the next in the same step; a worker's keeper admits runs
-- whose rate limit let them go (ADMIT_DUE). Every release happens inside one script, once.
-- Limits: `rate` {count, period ms, burst} (GCRA, one bucket per rate key), `concurrency`
-- (slots per concurrency key) and `weights` {key value: w} (a key of weight w has
-- concurrency * w slots, the others concurrency): the declared ones (LIMITS_DECLARED), each
-- part replaced by a runtime override (LIMITS_OVERRIDE; false: none). A run's lane is the JSON
-- pair [rate key, concurrency key]; the lanes sharing a concurrency key take turns at its slots.
-- These scripts build the admission keys themselves (their names depend on stored lanes):
-- mirrors of records/keys.py, checked by tests/records/test_scripts.py.
local ADMISSION_PREFIX = 'taskgate:adm:'
local LIMITS_DECLARED = 'taskgate:limits:declared'
local LIMITS_OVERRIDE = 'taskgate:limits:override'
local ADMIT_DUE = 'taskgate:admit-due'
local OUTBOX = 'taskgate:outbox'
local RECORD_PREFIX = 'taskgate:task:'
local EVENTS_PREFIX = 'taskgate:events:'
local FAIR = 'taskgate:fair'
local FAIR_WEIGHTS = 'taskgate:fair:weights'
local ADMIT_MAX = 100  -- runs one script admits at most (a keeper's next pass goes on)
-- Fair queueing by owner (TASKGATE_FAIR_BY=owner; FAIR holds the window, absent when off): a run
-- leaving admission (or a run of a task without limits) goes to its queue only while its owner
-- has fewer than `window` runs there not yet started; the others wait their turn (waiting_for
-- 'turn') in the group of that queue list, one lane per owner, and START admits the owner's
-- next. Each owner's runs in the queue are bounded, so owners' runs alternate in it. An owner
-- with a weight w in FAIR_WEIGHTS (TASKGATE_FAIR_WEIGHTS) has window * w turns, so w times the
-- others' share of the workers when they are the bottleneck.
-- A fair group's name: this, then the queue list (no task name starts with '@').
local FAIR_GROUP = '@fair:'
local FAIR_ANONYMOUS = 'anonymous'  -- the owner of a record without an owner field

local function adm_key(name, family, part)
  return ADMISSION_PREFIX .. #name .. ':' .. name .. ':' .. family .. ':' .. (part or '')
end

-- Redis's clock in milliseconds (one clock for every host's limits).
local function adm_now()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

-- The limits of task `name` now: `declared` is the caller's JSON ('' for none; nil: read the
-- stored one), each part of an override replacing it. nil when it has none.
local function limits_of(name, declared)
  if declared == nil then declared = redis.call('HGET', LIMITS_DECLARED, name) or '' end
  local override = redis.call('HGET', LIMITS_OVERRIDE, name)
  if declared == '' and not override then return nil end
  local conf = {}
  if declared ~= '' then conf = cjson.decode(declared) end
  if override then
    for part, value in pairs(cjson.decode(override)) do
      if value == false or value == cjson.null then conf[part] = nil else conf[part] = value end
    end
  end
  if not conf['rate'] and not conf['concurrency'] then return nil end
  return conf
end

-- The lane's theoretical arrival time (GCRA, ms): never before now, and never past the
-- furthest one the rate in effect can reach (a drained burst). At a steady rate that bound
-- changes nothing; a stored time from an earlier, slower rate (an override raised, a new
-- declaration) is cut to it and kept, so runs waiting under the old rate go at the new one.
local function rate_tat(rate, name, rk, now)
  local key = adm_key(name, 'gcra', rk)
  local tat = tonumber(redis.call('GET', key) or '0')
  local furthest = now + rate[3] * rate[2] / rate[1]
  if tat > furthest then
    tat = furthest
    redis.call('SET', key, string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
  end
  return math.max(tat, now)
end

-- When (ms) the rate limit lets the lane's next run go: now or earlier when it may go now.
local function rate_at(conf, name, rk, now)
  local rate = conf['rate']
  if not rate then return now end
  return rate_tat(rate, name, rk, now) - (rate[3] - 1) * rate[2] / rate[1]
end

local function rate_take(conf, name, rk, now)
  local rate = conf['rate']
  if not rate then return end
  local tat = rate_tat(rate, name, rk, now) + rate[2] / rate[1]
  redis.call('SET', adm_key(name, 'gcra', rk), string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
end

-- The places of key `ck` under `conf`: its concurrency limit times the key's weight (1 unless
-- given): a task's weights are part of its limits, a fair group's are the owners' (read here,
-- only for a fair group).
local function places(conf, ck)
  local weight
  if conf['fair'] then
    weight = redis.call('HGET', FAIR_WEIGHTS, ck)
  elseif type(conf['weights']) == 'table' then
    weight = conf['weights'][ck]
  end
  return conf['concurrency'] * (tonumber(weight) or 1)
end

local function slots_free(conf, name, ck)
  return not conf['concurrency'] or redis.call('ZCARD', adm_key(name, 'slots', ck)) < places(conf, ck)
end

-- Publish another task's record after a change (as transition.lua's publish does its own).
local function announce(record, task_id)
  redis.call('HINCRBY', record, 'seq', 1)
  local flat = redis.call('HGETALL', record)
  local fields = {}
  for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
  fields['message'] = nil
  redis.call('PUBLISH', EVENTS_PREFIX .. '{' .. task_id .. '}', cjson.encode(fields))
end

-- Hand a run to its queue: push its message (queue: the broker list), or, when the broker is
-- elsewhere (queue ''), keep the message in the record and leave its id for a keeper to publish.
local caller_publishes = false  -- set by dispatch: its run, if it goes now, is published by the caller
local function push(record, task_id, queue, message)
  if queue == '' and caller_publishes then return end
  if queue ~= '' then
    redis.call('LPUSH', queue, message)
  else
    redis.call('HSET', record, 'message', message)
    redis.call('RPUSH', OUTBOX, task_id)
  end
end

-- The limits of admission group `name`: a task's, or a fair group's window.
local function conf_of(name)
  if string.find(name, FAIR_GROUP, 1, true) == 1 then
    local window = redis.call('GET', FAIR)
    if not window then return nil end
    return {concurrency = tonumber(window), fair = true}
  end
  return limits_of(name, nil)
end

local enter  -- defined below: a run entering a group (a task's limits, or a queue's fair turns)

-- Hand a run its limits let go to its queue: through its owner's fair turns when fair queueing
-- is on (and the broker is this Redis), else at once. nil when it went, else 'turn'.
local function send(record, task_id, queue, message, hold)
  if hold ~= 'turn' and queue ~= '' then
    local window = redis.call('GET', FAIR)
    if window then
      local owner = redis.call('HGET', record, 'owner') or FAIR_ANONYMOUS
      local conf = {concurrency = tonumber(window), fair = true}
      return enter(FAIR_GROUP .. queue, conf, cjson.encode({'', owner}), 'turn', task_id, record, queue, message)
    end
  end
  push(record, task_id, queue, message)
  return nil
end

-- Admit one run: take its place (`hold`: 'slot' of a task's concurrency key, or 'turn' of a
-- fair group, kept in the record so the script ending it frees it) and its rate token, then
-- send it on. nil when it went to its queue, else why it waits in the next group.
local function admit_run(conf, name, rk, ck, record, task_id, queue, message, now, hold)
  if conf and conf['concurrency'] then
    redis.call('ZADD', adm_key(name, 'slots', ck), now, task_id)
    redis.call('SADD', adm_key(name, 'held'), ck)
    redis.call('HSET', record, hold, hold == 'slot' and ck or name)
  end
  if conf then rate_take(conf, name, rk, now) end
  return send(record, task_id, queue, message, hold)
end

-- Release the first runs waiting in `lane` while its limits let them go, at most `budget`.
-- Returns how many went and why it stopped: 'empty', `hold` (no free place), 'rate' (then
-- when, ms) or 'budget'.
local function drain_lane(name, conf, lane, now, budget, hold)
  local pair = cjson.decode(lane)
  local rk, ck = pair[1], pair[2]
  local wait = adm_key(name, 'wait', lane)
  local released, looked = 0, 0
  while released < budget and looked < budget * 4 do
    looked = looked + 1
    local task_id = redis.call('LINDEX', wait, 0)
    if not task_id then return released, 'empty' end
    local record = RECORD_PREFIX .. '{' .. task_id .. '}'
    local f = redis.call('HMGET', record, 'state', 'waiting_for', 'message', 'queue', 'expires_at')
    if (f[1] ~= 'queued' and f[1] ~= 'retrying') or not f[2] or not f[3] then
      redis.call('LPOP', wait)  -- cancelled or gone meanwhile: it waits no more
    elseif f[5] and tonumber(f[5]) <= now then
      redis.call('LPOP', wait)  -- past its expiry: never pushed (the keepers end it `expired`)
    else
      local why, at = nil, nil
      if conf and not slots_free(conf, name, ck) then
        why = hold
      elseif conf then
        at = rate_at(conf, name, rk, now)
        if at > now then why = 'rate' end
      end
      if why then
        if f[2] ~= why then
          redis.call('HSET', record, 'waiting_for', why)
          announce(record, task_id)
        end
        return released, why, at
      end
      redis.call('LPOP', wait)
      redis.call('HDEL', record, 'waiting_for', 'message', 'queue')
      admit_run(conf, name, rk, ck, record, task_id, f[4], f[3], now, hold)
      announce(record, task_id)
      released = released + 1
    end
  end
  return released, 'budget'
end

local function due_member(name, lane)
  return cjson.encode({name, lane})
end

-- Admit what the places (`hold`) of key `ck` of group `name` and the lanes' rate limits let
-- go, one run per lane in turn (round robin), at most ADMIT_MAX. A lane its rate holds back is
-- noted in ADMIT_DUE for when it may go; when the budget or the visits run out, the next lane
-- is noted as due now (a keeper goes on). Returns how many went.
local function admit_key(name, ck, now, conf, hold)
  local ring = adm_key(name, 'ring', ck)
  local budget = ADMIT_MAX
  local idle = 0  -- lanes in a row that released nothing
  local visits = 0  -- bounded, so a ring of thousands of held-back lanes never holds Redis long
  while true do
    local lanes = redis.call('LLEN', ring)
    if lanes == 0 or idle >= lanes then break end
    local lane = redis.call('LPOP', ring)
    visits = visits + 1
    if budget <= 0 or visits > 2 * ADMIT_MAX then
      redis.call('LPUSH', ring, lane)
      -- more may go at once after a full budget; after visits that released nothing, a little
      -- later (the lanes held back by their rate are due on their own): never a hot loop
      redis.call('ZADD', ADMIT_DUE, budget < ADMIT_MAX and now or now + 100, due_member(name, lane))
      break
    end
    local released, why, at = drain_lane(name, conf, lane, now, 1, hold)
    budget = budget - released
    if why == 'empty' then
      redis.call('SREM', adm_key(name, 'lanes'), lane)
    elseif why == hold then
      -- no free place: it ran nothing, so it keeps its turn (at the front) for the next place
      -- freed; sent to the back, it would lose it to the lane before it at every freed place
      redis.call('LPUSH', ring, lane)
      break  -- the lanes of one ring share its places
    else
      redis.call('RPUSH', ring, lane)  -- its turn is over
      if released > 0 then idle = 0 else idle = idle + 1 end
      if why == 'rate' then redis.call('ZADD', ADMIT_DUE, at, due_member(name, lane)) end
    end
  end
  return ADMIT_MAX - budget
end

-- A run leaves its place (`hold` 'slot': it ended or waits for a retry; 'turn': it started or
-- ended) of key `ck` in group `name`: admit the next of that key.
local function free_hold(name, task_id, record, ck, hold)
  redis.call('ZREM', adm_key(name, 'slots', ck), task_id)
  redis.call('HDEL', record, hold)
  if redis.call('EXISTS', adm_key(name, 'slots', ck)) == 0 then
    redis.call('SREM', adm_key(name, 'held'), ck)
  end
  admit_key(name, ck, adm_now(), conf_of(name), hold)
end

-- A run that waits no more without being admitted (cancelled, expired) leaves its lane's
-- waiting list at once, so the counts of waiting runs (GET /limits) drop with it; before
-- its record forgets why it waited. LREM from the head: runs mostly leave in the order they
-- came, so it looks at few.
local function leave_wait(task_id, record)
  local f = redis.call('HMGET', record, 'waiting_for', 'queue', 'name', 'lane', 'owner')
  if f[1] == 'turn' then
    redis.call('LREM', adm_key(FAIR_GROUP .. (f[2] or ''), 'wait', cjson.encode({'', f[5] or FAIR_ANONYMOUS})),
               1, task_id)
  elseif f[1] == 'rate' or f[1] == 'slot' then
    redis.call('LREM', adm_key(f[3] or '?', 'wait', f[4] or '["",""]'), 1, task_id)
  end
end

-- Release the places a run's record holds once its new state gives them up (publish() in
-- transition.lua calls it with the record's fields, the state before and after).
local function leave_places(task_id, record, fields, before, state, ended)
  if fields['slot'] and state ~= before and (ended or state == 'retrying') then
    free_hold(fields['name'] or '?', task_id, record, fields['slot'], 'slot')
    fields['slot'] = nil
  end
  if fields['turn'] and state ~= before and state ~= 'queued' then
    free_hold(fields['turn'], task_id, record, fields['owner'] or FAIR_ANONYMOUS, 'turn')
    fields['turn'] = nil
  end
end

-- Run `task_id` (its record `record`, for `queue` with `message`) enters group `name` (limits
-- `conf`) in `lane`, its places being `hold`: it goes on now if none of its lane waits and its
-- limits let it, else it waits at the end of its lane. nil when it went to its queue, else why
-- it waits ('rate', 'slot' or 'turn').
enter = function(name, conf, lane, hold, task_id, record, queue, message)
  local pair = cjson.decode(lane)
  local rk, ck = pair[1], pair[2]
  local now = adm_now()
  local wait = adm_key(name, 'wait', lane)
  local why, at = nil, nil
  if redis.call('EXISTS', wait) == 0 then  -- none of its lane waits: it may go first
    if not slots_free(conf, name, ck) then
      why = hold
    else
      at = rate_at(conf, name, rk, now)
      if at > now then why = 'rate' end
    end
    if not why then return admit_run(conf, name, rk, ck, record, task_id, queue, message, now, hold) end
  else  -- behind its lane's first, for the same reason
    why = redis.call('HGET', RECORD_PREFIX .. '{' .. redis.call('LINDEX', wait, 0) .. '}', 'waiting_for')
      or hold
  end
  redis.call('HSET', record, 'waiting_for', why, 'message', message, 'queue', queue)
  if redis.call('RPUSH', wait, task_id) == 1 then
    redis.call('RPUSH', adm_key(name, 'ring', ck), lane)
    redis.call('SADD', adm_key(name, 'lanes'), lane)
    if why == 'rate' then redis.call('ZADD', ADMIT_DUE, at, due_member(name, lane)) end
  end
  return why
end

-- Send run `task_id` (task `name`, its record `record`) on its way: to `queue` (the broker
-- list, '' when the broker is elsewhere) with `message`, now or once its limits (and its fair
-- turn) let it. `lane`: the run's lane ('': the one its record keeps, else the task's);
-- `declared`: the limits its declaration gives, as JSON ('' none; nil or '?': the stored ones).
-- Returns nil when it went to its queue now (for queue '': the caller publishes it, unless
-- `outbox`: a script releasing a run no caller waits for, whose run then goes to the outbox), else
-- why it waits.
-- Keep task `name`'s declared limits (JSON) for the scripts that send its runs without them.
local function declare_limits(name, declared)
  if declared and declared ~= '' and declared ~= '?' then redis.call('HSET', LIMITS_DECLARED, name, declared) end
end

local function dispatch(name, task_id, record, queue, message, lane, declared, outbox)
  if declared == '?' then declared = nil end  -- the sender does not have the task
  declare_limits(name, declared)
  local conf = limits_of(name, declared)
  if not conf then
    if queue == '' and not outbox then return nil end
    return send(record, task_id, queue, message, 'slot')
  end
  if not lane or lane == '' then lane = redis.call('HGET', record, 'lane') or '["",""]' end
  caller_publishes = not outbox
  local why = enter(name, conf, lane, 'slot', task_id, record, queue, message)
  caller_publishes = false
  return why
end

-- Give back the places of group `name` (`hold`: 'slot' of a task, 'turn' of a fair group)
-- held by runs that hold them no more (a record gone, ended, started for a turn, or not naming
-- the place), then admit the next runs of each key freed. Returns how many were given back.
local function reclaim(name, hold)
  local holding = {queued = true, started = hold == 'slot'}  -- a retrying run waits without one
  local reclaimed = 0
  for _, ck in ipairs(redis.call('SMEMBERS', adm_key(name, 'held'))) do
    local slots = adm_key(name, 'slots', ck)
    local freed = false
    for _, task_id in ipairs(redis.call('ZRANGE', slots, 0, -1)) do
      local f = redis.call('HMGET', RECORD_PREFIX .. '{' .. task_id .. '}', 'state', hold, 'owner')
      local owns = hold == 'slot' and f[2] == ck or (hold == 'turn' and f[2] == name
                                                      and (f[3] or FAIR_ANONYMOUS) == ck)
      if not holding[f[1] or ''] or not owns then
        redis.call('ZREM', slots, task_id)
        reclaimed = reclaimed + 1
        freed = true
      end
    end
    if redis.call('EXISTS', slots) == 0 then redis.call('SREM', adm_key(name, 'held'), ck) end
    if freed then admit_key(name, ck, adm_now(), conf_of(name), hold) end
  end
  return reclaimed
end

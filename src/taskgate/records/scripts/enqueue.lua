-- Record and queue one new run: `enqueue(k, a)` reads its keys from KEYS[k + 1] and its
-- arguments from ARGV[a + 1] on (records/scripts/submitting.py's `Enqueue` sends them, in this
-- order), and returns (what submit.lua returns, the run's bound values). Shared by submit.lua
-- (the API) and fire.lua (a schedule's run); needs admission.lua (the run goes through its
-- `dispatch`).
-- Keys: record, index, idem ('' without an Idempotency-Key), queue ('' when the broker is
-- elsewhere), delayed, owner_index ('' for the anonymous owner: the global index lists its
-- tasks), inflight ('' without a limit), rate, events (the task's channel), expiring.
-- Arguments: name, now, ttl, horizon, digest, task_id, message, due ('' to queue now: a due
-- time parks the message in the delayed set), owner ('' for the anonymous owner: the record then
-- has no owner field), rate_limit and inflight_limit (0 for none), deadline (ms on Redis's
-- clock, '' for none), idem_ttl, args (the arguments' JSON, kept in the record), replay_of (the
-- task this one replays, or ''), expires_at (ms, '' for none), lane and declared (see
-- admission.lua's `dispatch`), trace_id and span_id (its trace's id and its submit's span id,
-- '' without one: kept in the record).
local function enqueue(k, a)
  local record, index, idem, queue, delayed, owner_index, inflight, rate, events, expiring =
    KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], KEYS[k + 6], KEYS[k + 7],
    KEYS[k + 8], KEYS[k + 9], KEYS[k + 10]
  local name, now, ttl, horizon, digest, task_id, message, due, owner, rate_limit, inflight_limit,
        deadline, idem_ttl, args, replay_of, expires_at, lane, declared, trace_id, span_id =
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7],
    ARGV[a + 8], ARGV[a + 9], tonumber(ARGV[a + 10]), tonumber(ARGV[a + 11]), ARGV[a + 12],
    ARGV[a + 13], ARGV[a + 14], ARGV[a + 15], ARGV[a + 16], ARGV[a + 17], ARGV[a + 18], ARGV[a + 19],
    ARGV[a + 20] or ''
  local run = {record = record, task_id = task_id, now = now, ttl = ttl, horizon = horizon}

  if redis.call('EXISTS', record) == 1 then return '', run end  -- a retried call that already ran
  if deadline ~= '' then
    local clock = redis.call('TIME')
    if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > tonumber(deadline) then
      return '#late', run
    end
  end
  if idem ~= '' then
    local seen = redis.call('GET', idem)
    if seen then
      local pair = cjson.decode(seen)
      if pair[2] == digest then return pair[1], run end
      return '!' .. pair[1], run
    end
  end
  if rate_limit > 0 then  -- a 60 s window opens at the owner's first submission in it
    local count = redis.call('INCR', rate)
    if count == 1 then redis.call('PEXPIRE', rate, 60000) end
    if count > rate_limit then return '#rate:' .. redis.call('PTTL', rate), run end
  end
  if inflight ~= '' then
    redis.call('ZREMRANGEBYSCORE', inflight, '-inf', horizon)
    if redis.call('ZCARD', inflight) >= inflight_limit then return '#inflight', run end
  end
  if idem ~= '' then
    redis.call('SET', idem, cjson.encode({task_id, digest}), 'EX', idem_ttl)
  end
  -- no TTL: the record lives until the task ends (however long it waits), then expires
  local created = ms(now)
  -- its timeline, `queued` at created_at, is implied by its fields until it goes another way
  local fields = {'name', name, 'state', 'queued', 'created_at', created, 'attempts', 0}
  for _, pair in ipairs({{'owner', owner}, {'args', args}, {'replay_of', replay_of},
                         {'expires_at', expires_at}, {'lane', lane}, {'trace_id', trace_id},
                         {'span_id', span_id}}) do
    if pair[2] ~= '' then
      fields[#fields + 1] = pair[1]
      fields[#fields + 1] = pair[2]
    end
  end
  redis.call('HSET', record, unpack(fields))
  if expires_at ~= '' then redis.call('ZADD', expiring, tonumber(expires_at) / 1000, task_id) end
  -- the new task, for live lists (GET /events); a task's waiters subscribe after this
  local born = {name = name, state = 'queued', created_at = created, attempts = '0', seq = '0'}
  if owner ~= '' then born['owner'] = owner end
  redis.call('PUBLISH', events, cjson.encode(born))
  for _, key in ipairs({index, owner_index, inflight}) do
    if key ~= '' then
      redis.call('ZADD', key, now, task_id)
      redis.call('ZREMRANGEBYSCORE', key, '-inf', horizon)
      redis.call('EXPIRE', key, ttl)
    end
  end
  if due ~= '' then
    redis.call('HSET', record, 'message', message, 'queue', queue, 'next_attempt_at', ms(due))
    redis.call('ZADD', delayed, due, task_id)
  else
    local why = dispatch(name, task_id, record, queue, message, lane, declared)
    if why then return '#wait:' .. why, run end
  end
  return '', run
end

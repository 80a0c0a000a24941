-- The body of a function recording and queuing one new task, shared by submit.lua (the API)
-- and fire.lua (a schedule's run): included inside ``local function enqueue() ... end`` where
-- these locals are bound. Keys: record, index, idem, queue, delayed, owner_index, inflight,
-- rate, events (the task's channel); arguments: name, now, ttl, horizon, digest, task_id, message, due, owner, rate_limit,
-- inflight_limit, deadline, idem_ttl, args (the arguments' JSON, kept in the record), replay_of
-- (the task this one replays, or ''). It returns what submit.lua returns.
-- idem: '' without an Idempotency-Key; queue: '' when the broker is elsewhere; owner_index:
-- '' for the anonymous owner (the global index lists its tasks); inflight: '' without a limit;
-- due: '' to queue now (a due time parks the message in the delayed set); owner: '' for the
-- anonymous owner (the record then has no owner field); limits: 0 for none; deadline: ms on
-- Redis's clock ('' for none)
if redis.call('EXISTS', record) == 1 then return '' end  -- a retried call that already ran
if deadline ~= '' then
  local clock = redis.call('TIME')
  if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > tonumber(deadline) then
    return '#late'
  end
end
if idem ~= '' then
  local seen = redis.call('GET', idem)
  if seen then
    local pair = cjson.decode(seen)
    if pair[2] == digest then return pair[1] end
    return '!' .. pair[1]
  end
end
if rate_limit > 0 then  -- a 60 s window opens at the owner's first submission in it
  local count = redis.call('INCR', rate)
  if count == 1 then redis.call('PEXPIRE', rate, 60000) end
  if count > rate_limit then return '#rate:' .. redis.call('PTTL', rate) end
end
if inflight ~= '' then
  redis.call('ZREMRANGEBYSCORE', inflight, '-inf', horizon)
  if redis.call('ZCARD', inflight) >= inflight_limit then return '#inflight' end
end
if idem ~= '' then
  redis.call('SET', idem, cjson.encode({task_id, digest}), 'EX', idem_ttl)
end
-- no TTL: the record lives until the task ends (however long it waits), then expires
local created = ms(now)
local fields = {'name', name, 'state', 'queued', 'created_at', created, 'attempts', 0, 'timeline',
                '[{"state":"queued","at":' .. created .. ',"attempt":0}]'}  -- its first entry, as JSON
for _, pair in ipairs({{'owner', owner}, {'args', args}, {'replay_of', replay_of}}) do
  if pair[2] ~= '' then
    fields[#fields + 1] = pair[1]
    fields[#fields + 1] = pair[2]
  end
end
redis.call('HSET', record, unpack(fields))
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
elseif queue ~= '' then
  redis.call('LPUSH', queue, message)
end
return ''

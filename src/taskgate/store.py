"""Task records in Redis and their state machine, shared by the API and the workers.

A record is a hash at ``taskgate:task:<id>``. Every transition runs as one Lua script, so the
API and the workers never race: a task cancelled while queued never starts, a finished task is
never started again, and each change is published on ``taskgate:events:<id>`` (with a sequence
number) for live status streams.

A record never expires while its task may still run: queued, delayed, started and retrying
records have no TTL (however long the delay, the queue or the backoff); each gets its TTL
(``TASKGATE_RESULT_TTL``, or ``TASKGATE_FAILURE_TTL`` for failures) when the task ends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson

from .constants import (
    ALIVE_PREFIX,
    ANONYMOUS,
    HEARTBEAT_TTL,
    INFLIGHT_PREFIX,
    LATENCY_BUCKETS,
    STATS_KEY,
    STATS_TTL,
    TASK_RECORD_PREFIX,
)

#: Common Lua: record times are whole milliseconds since the epoch (stored as integers, the
#: most compact form of a Redis hash field); scripts take and give seconds.
_TIMES = """
local function ms(seconds) return string.format('%d', math.floor(tonumber(seconds) * 1000 + 0.5)) end
local function seconds(stored)  -- records written before times were milliseconds hold seconds
  if not stored then return nil end
  if string.find(stored, '.', 1, true) then return tonumber(stored) end
  return tonumber(stored) / 1000
end
"""

#: Common Lua, for scripts whose KEYS[1] is the record: ``before`` is the state the script
#: found; ``publish`` publishes the record (as JSON) with a bumped sequence number and, when this
#: script ended the task, counts it in the stats, takes it off its owner's in-flight set and
#: its alive mark (no process runs it any more) and, if it succeeded, drops its delivery count.
_PUBLISH = _TIMES + f"""
local before = redis.call('HGET', KEYS[1], 'state')
local ended = {{succeeded = true, failed = true, cancelled = true}}
local function publish(key, channel)
  redis.call('HINCRBY', key, 'seq', 1)
  local flat = redis.call('HGETALL', key)
  local record = {{}}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  local state = record['state']
  if ended[state] and not ended[before] then
    local id = string.sub(key, {len(TASK_RECORD_PREFIX) + 1})
    redis.call('ZREM', '{INFLIGHT_PREFIX}' .. (record['owner'] or '{ANONYMOUS}'), id)
    redis.call('DEL', '{ALIVE_PREFIX}' .. id)
    -- the delivery count guards a running task (and explains a dead letter): done with it
    if state == 'succeeded' then redis.call('HDEL', key, 'deliveries') end
    local name = record['name'] or '?'
    redis.call('HINCRBY', '{STATS_KEY}', 'done:' .. name .. ':' .. state, 1)
    local started, created, finished = seconds(record['started_at']), seconds(record['created_at']),
      seconds(record['finished_at'])
    local function observe(metric, seconds)
      local bucket = {len(LATENCY_BUCKETS)}
      for i, bound in ipairs({{{", ".join(repr(b) for b in LATENCY_BUCKETS)}}}) do
        if seconds <= bound then bucket = i - 1 break end
      end
      redis.call('HINCRBY', '{STATS_KEY}', metric .. ':' .. name .. ':' .. bucket, 1)
      redis.call('HINCRBYFLOAT', '{STATS_KEY}', metric .. '_sum:' .. name, seconds)
    end
    if started and created then observe('wait', math.max(0, started - created)) end
    if started and finished then observe('run', math.max(0, finished - started)) end
    redis.call('EXPIRE', '{STATS_KEY}', {STATS_TTL})
  end
  record['message'] = nil
  redis.call('PUBLISH', channel, cjson.encode(record))
end
local function mark_alive(key, node)
  local id = string.sub(key, {len(TASK_RECORD_PREFIX) + 1})
  redis.call('SET', '{ALIVE_PREFIX}' .. id, node, 'EX', {HEARTBEAT_TTL})
end
"""

#: Worker, before running: KEYS record, channel, dead set; ARGV name, now, ttl, max deliveries,
#: worker node name. Marks the task alive (``taskgate:alive:<id>``; the running process keeps
#: the mark fresh, and the script that ends the task removes it).
#: Returns 'run', 'cancelled' (never run it), 'finished' (a duplicate delivery: skip) or 'dead'
#: (this attempt was delivered max-deliveries times already: it keeps killing its worker).
START = _PUBLISH + """
local state = before
if state == 'succeeded' or state == 'failed' then return 'finished' end
if state == 'cancelled' or redis.call('HGET', KEYS[1], 'cancel') == '1' then
  if state ~= 'cancelled' then
    redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ms(ARGV[2]))
    redis.call('EXPIRE', KEYS[1], ARGV[3])
    publish(KEYS[1], KEYS[2])
  end
  return 'cancelled'
end
if not state then
  -- sent by another producer (plain Celery): start a record for it
  redis.call('HSET', KEYS[1], 'name', ARGV[1], 'created_at', ms(ARGV[2]))
end
local deliveries = tonumber(redis.call('HGET', KEYS[1], 'deliveries') or '0')
if deliveries >= tonumber(ARGV[4]) then
  local error = cjson.encode({type = 'WorkerLostError', retryable = false, message =
    'the task was delivered ' .. ARGV[4] .. ' times and its worker died each time; dead-lettered'})
  redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ms(ARGV[2]), 'error', error,
             'dead_reason', 'max_deliveries')
  redis.call('ZADD', KEYS[3], ARGV[2], string.sub(KEYS[1], 15))
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[3])  -- the worker then sets the failure TTL
  publish(KEYS[1], KEYS[2])
  return 'dead'
end
redis.call('HSET', KEYS[1], 'state', 'started', 'started_at', ms(ARGV[2]), 'deliveries', deliveries + 1,
           'worker', ARGV[5])
redis.call('HDEL', KEYS[1], 'next_attempt_at')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('PERSIST', KEYS[1])  -- it may run for longer than any TTL: it expires once it ends
mark_alive(KEYS[1], ARGV[5])
publish(KEYS[1], KEYS[2])
return 'run'
"""

#: Worker or API: KEYS record, channel; ARGV ttl, then field/value pairs to set.
#: Sets the fields and publishes; a record that is now ended expires in ``ttl`` seconds (unless
#: 0: keep its TTL), one that is not has none. Returns the new state.
UPDATE = _PUBLISH + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if not ended[redis.call('HGET', KEYS[1], 'state')] then redis.call('PERSIST', KEYS[1])
elseif ARGV[1] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
publish(KEYS[1], KEYS[2])
return redis.call('HGET', KEYS[1], 'state')
"""

#: API: KEYS record, channel, delayed set; ARGV now, ttl.
#: Queued or retrying -> cancelled at once; started -> cancel flag for the task to see.
#: Returns 'cancelled' (now), 'cancelling', 'missing', or 'already:<terminal state>'.
CANCEL = _PUBLISH + """
local state = before
if not state then return 'missing' end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then return 'already:' .. state end
redis.call('HSET', KEYS[1], 'cancel', '1')
if state == 'queued' or state == 'retrying' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ms(ARGV[1]))
  redis.call('HDEL', KEYS[1], 'next_attempt_at', 'message', 'queue')
  redis.call('ZREM', KEYS[3], string.sub(KEYS[1], 15))
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  publish(KEYS[1], KEYS[2])
  return 'cancelled'
end
publish(KEYS[1], KEYS[2])
return 'cancelling'
"""

#: API, on submit: KEYS record, index, idempotency key (or ''), queue list (or '' when the
#: broker is elsewhere), delayed set, owner's index (or '' for the anonymous owner, whose tasks
#: the global index lists), owner's in-flight set (or '' when there is no in-flight limit),
#: owner's rate counter; ARGV name, now, ttl, index horizon, digest, task id, message, due time ('' to
#: queue now: a due time parks the message in the delayed set), owner ('' for the anonymous
#: owner: the record then has no owner field), rate limit (0: none),
#: in-flight limit (0: none), deadline (ms on Redis's clock; '' for none), idempotency TTL.
#: Returns '' when the task is new (and queued); the id of the task the idempotency key already
#: made ('!'-prefixed when its body differed); '#rate' or '#inflight' when a quota refuses it;
#: '#late' when it runs after the deadline (the API has given up on it: it must not be queued).
SUBMIT = _TIMES + """
if redis.call('EXISTS', KEYS[1]) == 1 then return '' end  -- a retried call that already ran
if ARGV[12] ~= '' then
  local now = redis.call('TIME')
  if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[12]) then
    return '#late'
  end
end
if KEYS[3] ~= '' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local pair = cjson.decode(seen)
    if pair[2] == ARGV[5] then return pair[1] end
    return '!' .. pair[1]
  end
end
if tonumber(ARGV[10]) > 0 then
  local count = redis.call('INCR', KEYS[8])
  if count == 1 then redis.call('EXPIRE', KEYS[8], 120) end
  if count > tonumber(ARGV[10]) then return '#rate' end
end
if KEYS[7] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', ARGV[4])
  if redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[11]) then return '#inflight' end
end
if KEYS[3] ~= '' then
  redis.call('SET', KEYS[3], cjson.encode({ARGV[6], ARGV[5]}), 'EX', ARGV[13])
end
-- no TTL: the record lives until the task ends (however long it waits), then expires
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'state', 'queued', 'created_at', ms(ARGV[2]), 'attempts', 0)
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'owner', ARGV[9]) end
for _, index in ipairs({KEYS[2], KEYS[6], KEYS[7]}) do
  if index ~= '' then
    redis.call('ZADD', index, ARGV[2], ARGV[6])
    redis.call('ZREMRANGEBYSCORE', index, '-inf', ARGV[4])
    redis.call('EXPIRE', index, ARGV[3])
  end
end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[1], 'message', ARGV[7], 'queue', KEYS[4], 'next_attempt_at', ms(ARGV[8]))
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[6])
elseif KEYS[4] ~= '' then
  redis.call('LPUSH', KEYS[4], ARGV[7])
end
return ''
"""

#: Worker: KEYS delayed set; ARGV now, batch size. Moves due messages to their queues,
#: atomically (each is pushed exactly once); skips tasks cancelled meanwhile. Returns the count.
RELEASE = f"""
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local record = '{TASK_RECORD_PREFIX}' .. id
  local fields = redis.call('HMGET', record, 'message', 'queue', 'state')
  if fields[1] and (fields[3] == 'queued' or fields[3] == 'retrying') then
    redis.call('LPUSH', fields[2], fields[1])
    moved = moved + 1
  end
  redis.call('HDEL', record, 'message', 'queue')
end
return moved
"""

#: Worker, after a transient error: KEYS record, channel, delayed set; ARGV ttl (unused: a
#: retrying record has no TTL), due time, message, queue list, error JSON. The retry waits in
#: the delayed set, not in a worker.
PARK = _PUBLISH + """
redis.call('HSET', KEYS[1], 'state', 'retrying', 'next_attempt_at', ms(ARGV[2]), 'message', ARGV[3],
           'queue', ARGV[4], 'error', ARGV[5], 'deliveries', 0)
redis.call('ZADD', KEYS[3], ARGV[2], string.sub(KEYS[1], 15))
redis.call('PERSIST', KEYS[1])
publish(KEYS[1], KEYS[2])
return 'retrying'
"""

#: Worker main process, when the pool process running a task vanished without the task's own
#: handlers running (a hard time limit, a kill, an out-of-memory kill): KEYS record, channel;
#: ARGV now, ttl, error JSON, the state Celery's handling implies ('failed': the message was
#: acknowledged; 'queued': it was requeued). Changes only a record still ``started`` (the task
#: may have ended just before). Returns the state the record is left in.
LOST = _PUBLISH + """
if before ~= 'started' then return before or false end
if ARGV[4] == 'failed' then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ms(ARGV[1]), 'error', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
else
  redis.call('HSET', KEYS[1], 'state', 'queued', 'error', ARGV[3])
  redis.call('HDEL', KEYS[1], 'progress')
end
publish(KEYS[1], KEYS[2])
return ARGV[4]
"""

#: Worker that does not know the task: KEYS record; ARGV now (ms). Remembers when a worker first
#: lacked the task. Returns nil without a record, else {state, first time (ms)}.
UNKNOWN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HSETNX', KEYS[1], 'unregistered_since', ARGV[1])
return redis.call('HMGET', KEYS[1], 'state', 'unregistered_since')
"""

#: Worker, when retries ran out: KEYS record, channel, dead set; ARGV ttl, now, error JSON,
#: arguments JSON, reason. The task fails and joins the dead letters, arguments kept to requeue.
DEAD = _PUBLISH + """
redis.call('HSET', KEYS[1], 'state', 'failed', 'finished_at', ms(ARGV[2]), 'error', ARGV[3],
           'args', ARGV[4], 'dead_reason', ARGV[5])
redis.call('HDEL', KEYS[1], 'next_attempt_at')
redis.call('ZADD', KEYS[3], ARGV[2], string.sub(KEYS[1], 15))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2] - ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
publish(KEYS[1], KEYS[2])
return 'dead'
"""

#: API: KEYS record, channel, dead set, queue list ('' when the broker is elsewhere);
#: ARGV message, ttl, now.
#: Takes the task off the dead letters and queues it again under the same id, with fresh counts.
REQUEUE = _PUBLISH + f"""
if redis.call('ZREM', KEYS[3], string.sub(KEYS[1], 15)) == 0 then return 'missing' end
redis.call('HDEL', KEYS[1], 'error', 'finished_at', 'started_at', 'next_attempt_at', 'dead_reason',
           'unregistered_since',
           'result', 'progress', 'cancel')
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', 0, 'deliveries', 0)
redis.call('PERSIST', KEYS[1])
local owner = redis.call('HGET', KEYS[1], 'owner') or '{ANONYMOUS}'
redis.call('ZADD', '{INFLIGHT_PREFIX}' .. owner, ARGV[3], string.sub(KEYS[1], 15))
if KEYS[4] ~= '' then redis.call('LPUSH', KEYS[4], ARGV[1]) end
publish(KEYS[1], KEYS[2])
return 'queued'
"""


def decode_record(raw: Mapping[Any, Any]) -> dict[str, Any]:
    """A record hash (or its published JSON) as Python values. A field that does not decode
    (malformed JSON, a time or count that is not a number) is left out, never an exception:
    one bad field must not make a task, or the history listing it, unreadable."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if name in ("message", "queue", "unregistered_since"):
            continue  # internal fields
        try:
            out[name] = _decode_field(name, text)
        except (ValueError, TypeError, OverflowError):
            continue
    return out


def _decode_field(name: str, text: Any) -> Any:
    if name in ("progress", "result", "error", "args"):
        return orjson.loads(text)
    if name in ("created_at", "started_at", "finished_at", "next_attempt_at"):
        # integer milliseconds; records written by earlier versions hold seconds ("1.7e9.123")
        seconds = float(text) if "." in str(text) else int(text) / 1000
        if not math.isfinite(seconds):
            raise ValueError(f"{name} is not a time: {text!r}")
        return seconds
    if name in ("attempts", "seq", "deliveries"):
        return int(text)
    return text


def stamp(seconds: float) -> int:
    """A time as records store it: whole milliseconds since the epoch (see ``_TIMES``)."""
    return round(seconds * 1000)

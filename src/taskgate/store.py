"""Task records in Redis and their state machine, shared by the API and the workers.

A record is a hash at ``taskgate:task:<id>``. Every transition runs as one Lua script, so the
API and the workers never race: a task cancelled while queued never starts, a finished task is
never started again, and each change is published on ``taskgate:events:<id>`` (with a sequence
number) for live status streams.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

#: Fields of a record, in the order they are reported.
FIELDS = ("name", "state", "created_at", "started_at", "finished_at", "attempts",
          "next_attempt_at", "progress", "result", "error", "seq", "cancel")

#: Common Lua: publish the record (as JSON) with a bumped sequence number.
_PUBLISH = """
local function publish(key, channel)
  redis.call('HINCRBY', key, 'seq', 1)
  local flat = redis.call('HGETALL', key)
  local record = {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  redis.call('PUBLISH', channel, cjson.encode(record))
end
"""

#: Worker, before running: KEYS record, channel; ARGV name, now, ttl.
#: Returns 'run', 'cancelled' (never run it) or 'finished' (a duplicate delivery: skip).
START = _PUBLISH + """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'succeeded' or state == 'failed' then return 'finished' end
if state == 'cancelled' or redis.call('HGET', KEYS[1], 'cancel') == '1' then
  if state ~= 'cancelled' then
    redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[2])
    publish(KEYS[1], KEYS[2])
  end
  return 'cancelled'
end
if not state then
  -- sent by another producer (plain Celery): start a record for it
  redis.call('HSET', KEYS[1], 'name', ARGV[1], 'created_at', ARGV[2])
end
redis.call('HSET', KEYS[1], 'state', 'started', 'started_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'next_attempt_at')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
publish(KEYS[1], KEYS[2])
return 'run'
"""

#: Worker or API: KEYS record, channel; ARGV ttl, then field/value pairs to set.
#: Sets the fields, refreshes the TTL, publishes. Returns the new state.
UPDATE = _PUBLISH + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[1] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
publish(KEYS[1], KEYS[2])
return redis.call('HGET', KEYS[1], 'state')
"""

#: API: KEYS record, channel; ARGV now, ttl.
#: Queued or retrying -> cancelled at once; started -> cancel flag for the task to see.
#: Returns 'cancelled' (now), 'cancelling', 'missing', or 'already:<terminal state>'.
CANCEL = _PUBLISH + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 'missing' end
if state == 'succeeded' or state == 'failed' or state == 'cancelled' then return 'already:' .. state end
redis.call('HSET', KEYS[1], 'cancel', '1')
if state == 'queued' or state == 'retrying' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'finished_at', ARGV[1])
  redis.call('HDEL', KEYS[1], 'next_attempt_at')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  publish(KEYS[1], KEYS[2])
  return 'cancelled'
end
publish(KEYS[1], KEYS[2])
return 'cancelling'
"""

#: API, on submit: KEYS record, index, idempotency key (or ''), queue list (or '' when the
#: broker is elsewhere); ARGV name, now, ttl, index horizon, digest, task id, message.
#: Returns '' when the task is new (and queued), else the id of the task the idempotency key
#: already made ('!'-prefixed when its body differed).
SUBMIT = """
if KEYS[3] ~= '' then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local pair = cjson.decode(seen)
    if pair[2] == ARGV[5] then return pair[1] end
    return '!' .. pair[1]
  end
  redis.call('SET', KEYS[3], cjson.encode({ARGV[6], ARGV[5]}), 'EX', 86400)
end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'state', 'queued', 'created_at', ARGV[2], 'attempts', 0)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if KEYS[4] ~= '' then redis.call('LPUSH', KEYS[4], ARGV[7]) end
return ''
"""


def decode_record(raw: Mapping[Any, Any]) -> dict[str, Any]:
    """A record hash (or its published JSON) as Python values."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        text = value.decode() if isinstance(value, bytes) else value
        if name in ("progress", "result", "error"):
            out[name] = orjson.loads(text)
        elif name in ("created_at", "started_at", "finished_at", "next_attempt_at"):
            out[name] = float(text)
        elif name in ("attempts", "seq"):
            out[name] = int(text)
        else:
            out[name] = text
    return out


def dump(value: Any) -> bytes:
    """JSON for a record field."""
    return orjson.dumps(value)

-- API: take a task off the dead letters and queue it again under the same id, with fresh
-- counts. `queue` is the Redis list to push `message` to ('' when the broker is elsewhere:
-- the API publishes it unless it waits). It goes through admission.lua's `dispatch` like any
-- run; `trace_id` and `span_id` (its new run's trace and submit span, '' for none) replace the
-- record's. Returns 'queued',
-- 'waiting' (for its task's limits), or 'missing' when it is not a dead letter.
--#include transition.lua
local dead, queue = KEYS[6], KEYS[7]
local message, now, trace_id, span_id = ARGV[2], ARGV[3], ARGV[4], ARGV[5] or ''

if redis.call('ZREM', dead, task_id) == 0 then return 'missing' end
-- a fresh run an admin asked for: a past expiry of the first would end it at once
redis.call('HDEL', record, 'error', 'finished_at', 'started_at', 'next_attempt_at', 'dead_reason',
           'unregistered_since', 'result', 'progress', 'cancel', 'cancel_requested_at', 'worker',
           'expires_at')
redis.call('HSET', record, 'state', 'queued', 'attempts', 0, 'deliveries', 0)
if trace_id ~= '' then redis.call('HSET', record, 'trace_id', trace_id, 'span_id', span_id) end
redis.call('PERSIST', record)
redis.call('ZADD', inflight, now, task_id)
local why = dispatch(redis.call('HGET', record, 'name') or '?', task_id, record, queue, message, '', nil)
publish()
if why then return 'waiting' end
return 'queued'

-- Worker keeper (a schedule's tick) or API (run now): claim the tick and queue its run, all at
-- once, so with any number of workers each tick fires exactly once.
-- KEYS: the schedule, the due set, the schedule's runs index, the record of its last run ('' if
-- none), then the run's keys as enqueue.lua reads them.
-- ARGV: schedule id; the due score the caller read (ms); the next due score (ms); the tick the
-- run stands for (ms; '' for a run now); mode: 'fire', 'miss' (advance without a run: missed
-- while no worker ran, or its task is gone; then 'problem' says why, or '') or 'now'; the last
-- run's task id the caller read ('' if none); problem; then the run's arguments as enqueue.lua
-- reads them.
-- Returns 'fired' (queued, or waiting for its task's limits), 'fired-out' (queued, to be
-- published by the caller: the broker is elsewhere), 'missed', 'overlap' (skipped: the last run
-- has not finished), 'taken' (the due score changed: another worker fired it, or it was paused,
-- changed or deleted), 'stale' (another run started since the caller read the last one: read
-- again), or what the run's enqueue refused ('#rate:<ms>', '#inflight').
--#include times.lua
--#include admission.lua
--#include enqueue.lua
local schedule, due_set, runs, last_record = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local run_queue = KEYS[8]  -- the run's queue (enqueue.lua's fourth key)
local schedule_id, expected, next_due, tick, mode, last_task_id, problem =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local now = ARGV[9]  -- the run's `now` (enqueue.lua's second argument)

if redis.call('EXISTS', schedule) == 0 then return 'taken' end
if mode ~= 'now' then
  local score = redis.call('ZSCORE', due_set, schedule_id)
  if not score or tonumber(score) ~= tonumber(expected) then return 'taken' end
end
local last = redis.call('HGET', schedule, 'last_task_id') or ''
if last ~= last_task_id then return 'stale' end
if mode ~= 'now' then
  redis.call('ZADD', due_set, next_due, schedule_id)
  redis.call('HSET', schedule, 'next_run_at', next_due)
  if mode == 'miss' then
    if problem ~= '' then
      redis.call('HSET', schedule, 'problem', problem)
    else
      redis.call('HSET', schedule, 'missed_at', ms(now))
      redis.call('HINCRBY', schedule, 'missed', 1)
    end
    return 'missed'
  end
  if last_task_id ~= '' and redis.call('HGET', schedule, 'overlap') == 'skip' then
    local state = redis.call('HGET', last_record, 'state')
    if state == 'queued' or state == 'started' or state == 'retrying' then
      redis.call('HINCRBY', schedule, 'skipped', 1)
      return 'overlap'
    end
  end
end
local said, run = enqueue(4, 7)
local waits = string.find(said, '#wait:', 1, true) == 1
if said ~= '' and not waits then
  if mode ~= 'now' then redis.call('HSET', schedule, 'problem', 'a run was refused: ' .. said) end
  return said
end
local record, task_id, ttl, horizon = run.record, run.task_id, run.ttl, run.horizon
redis.call('HSET', record, 'schedule_id', schedule_id)
redis.call('HSET', schedule, 'last_task_id', task_id, 'last_run_at', ms(now))
redis.call('HDEL', schedule, 'problem')
if tick ~= '' then
  redis.call('HSET', record, 'tick', tick)
  redis.call('HSET', schedule, 'last_tick', tick)
end
redis.call('ZADD', runs, now, task_id)
redis.call('ZREMRANGEBYSCORE', runs, '-inf', horizon)
redis.call('EXPIRE', runs, ttl)
if not waits and run_queue == '' then return 'fired-out' end
return 'fired'

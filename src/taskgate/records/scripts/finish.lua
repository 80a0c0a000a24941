-- Worker (and whoever sent a run): a run ends, or waits for Celery's retry, by one of the moves
-- below, each only from the states it names, so a late or duplicate end (its record already
-- ended, went back to its queue, or never started) changes nothing. An ended record expires in
-- `ttl` seconds; a retrying one has no TTL.
-- ARGV: task id; the move; ttl; at (ms: its finished_at, or for 'retrying' its next_attempt_at);
-- the error ('' for none); the result ('' for none), both JSON.
-- Returns {1, the new state}, {0, the state found} when that state may not make the move
-- (nothing changed), or nil without a record.
--#include transition.lua
local move, ttl, at, error, result = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]

-- The state machine of a run's end: each move, the state it leaves the record in, the states
-- it may leave, and the field `at` is stored in.
local STARTED = {started = true}
local MOVES = {
  succeeded = {to = 'succeeded', from = STARTED, at = 'finished_at'},  -- it returned `result`
  failed = {to = 'failed', from = STARTED, at = 'finished_at'},  -- it raised `error`, for good
  cancelled = {to = 'cancelled', from = STARTED, at = 'finished_at'},  -- it saw its cancel flag, or was terminated
  retrying = {to = 'retrying', from = STARTED, at = 'next_attempt_at'},  -- Celery retries it (delays not parked)
  -- never ran: the broker did not take its message (a schedule's run), or the worker refused it
  refused = {to = 'failed', from = {queued = true, retrying = true}, at = 'finished_at'},
}

local it = MOVES[move]
if not it then return redis.error_reply('finish: no move ' .. tostring(move)) end
if not before then return false end
if not it.from[before] then return {0, before} end
local fields = {'state', it.to, it.at, at}
if error ~= '' then fields[#fields + 1] = 'error'; fields[#fields + 1] = error end
if result ~= '' then fields[#fields + 1] = 'result'; fields[#fields + 1] = result end
redis.call('HSET', record, unpack(fields))
if ENDED[it.to] then redis.call('EXPIRE', record, ttl) else redis.call('PERSIST', record) end
publish()
return {1, it.to}

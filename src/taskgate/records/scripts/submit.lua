-- API, on submit: check the Idempotency-Key and the owner's quotas, write the record (queued),
-- index it and, when the broker is this Redis, push the message, all at once.
-- Returns '' when the task is new (and queued); the id of the task the Idempotency-Key already
-- made ('!'-prefixed when its body differed); '#rate:<ms until the owner's rate window ends>' or
-- '#inflight' when a quota refuses it;
-- '#late' when it runs after the deadline (the API has given up on it: it must not be queued).
--#include times.lua
local record, index, idem, queue, delayed, owner_index, inflight, rate, events =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local name, now, ttl, horizon, digest, task_id, message, due, owner, rate_limit, inflight_limit,
      deadline, idem_ttl, args, replay_of =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], tonumber(ARGV[10]),
  tonumber(ARGV[11]), ARGV[12], ARGV[13], ARGV[14], ARGV[15]
-- (each explained in enqueue.lua)

local function enqueue()
--#include enqueue.lua
end
return enqueue()

-- API, on submit: check the Idempotency-Key and the owner's quotas, write the record (queued),
-- index it and send it on its way (admission.lua's `dispatch`: pushed now when the broker is
-- this Redis and its limits let it, else waiting), all at once.
-- Returns '' when the task is new and queued; '#wait:<why>' when it is new and waits for its
-- limits ('rate', 'slot'); the id of the task the Idempotency-Key already made ('!'-prefixed
-- when its body differed); '#rate:<ms until the owner's rate window ends>' or '#inflight' when
-- a quota refuses it; '#late' when it runs after the deadline (the API has given up on it: it
-- must not be queued). KEYS and ARGV: as enqueue.lua reads them.
--#include times.lua
--#include admission.lua
--#include enqueue.lua
local said = enqueue(0, 0)
return said

-- Worker keeper, now and then: give back the places ARGV[2] ('slot' of a task's concurrency
-- limit, 'turn' of a queue's fair group) of group ARGV[1] held by runs
-- that hold them no more (a record gone, ended or no longer naming the slot: changed by hand,
-- or expired), then admit the next runs of each key freed. The scripts that end runs free
-- their slots themselves; this only keeps a slot from leaking when a record changed outside
-- them. KEYS: none (admission keys are built in admission.lua). Returns the slots reclaimed.
--#include admission.lua
return reclaim(ARGV[1], ARGV[2])

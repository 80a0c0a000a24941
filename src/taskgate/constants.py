"""Defaults and limits taskgate uses in more than one place (Redis key names: ``records.keys``)."""

from __future__ import annotations

#: Seconds between a worker's heartbeats, and how long one lasts (also the life of a running
#: task's alive mark; ``records/scripts/transition.lua`` mirrors it).
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TTL = 10

#: Seconds between an open Taskgate's publishings of its catalogue (``producer/startup.py``);
#: an entry not republished for three times this reads as no running API's (``records.workers``).
CATALOGUE_REFRESH = 60.0

#: A message unacked for longer than this whose tag no live worker holds is requeued.
REAP_GRACE = 15.0

#: The owner of tasks submitted while auth is off.
ANONYMOUS = "anonymous"

#: How long the stats hash is kept after its last write (mirrored in ``transition.lua``).
STATS_TTL = 30 * 86_400

#: Histogram bucket bounds (seconds) for queue wait and run time (mirrored in ``transition.lua``).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

#: Minutes of per-minute counts (tasks ended, queue wait) kept in the stats hash for
#: ``GET /summary``'s last hour (mirrored in ``transition.lua``).
MINUTES_KEPT = 61

#: How long an Idempotency-Key is remembered.
IDEMPOTENCY_TTL = 86_400

#: Seconds an HTTP client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 1

#: Signed 64-bit bounds: the range of integers the HTTP API accepts and returns.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

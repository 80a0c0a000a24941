"""Every Redis key prefix and default that taskgate uses, in one place."""

from __future__ import annotations

#: ``taskgate:task:<id>`` -> hash: the task's record (name, state, times, attempts, progress,
#: result or error). Written at submission, updated by the worker at each transition; expires
#: ``result_ttl`` after submission and again after it finishes (``failure_ttl`` for failures).
TASK_RECORD_PREFIX = "taskgate:task:"

#: ``taskgate:events:<id>`` -> pub/sub channel: the record as JSON after every change.
EVENTS_PREFIX = "taskgate:events:"

#: ``taskgate:index`` -> sorted set of task ids scored by submission time, for the history list;
#: trimmed of ids older than the longest TTL on every submission, and itself expiring.
TASK_INDEX_KEY = "taskgate:index"

#: ``taskgate:delayed`` -> sorted set of task ids by due time: delayed submissions and retries
#: wait here (their message in the record's ``message`` field), not in a worker's memory, so a
#: long delay never meets the broker's visibility timeout. Workers move due ones to the queue.
DELAYED_KEY = "taskgate:delayed"

#: ``taskgate:dead`` -> sorted set of dead-lettered task ids by time: tasks that exhausted their
#: retries or deliveries. Entries older than ``failure_ttl`` are trimmed; the set expires too.
DEAD_KEY = "taskgate:dead"

#: ``taskgate:worker:<hostname>:<pid>`` -> JSON ``{"tags": [delivery tags it holds], "queues":
#: [queues it consumes], "tasks": [Celery names of the tasks it has], "at": time}``, rewritten
#: every ``HEARTBEAT_INTERVAL`` seconds with a TTL of ``HEARTBEAT_TTL``.
WORKER_PREFIX = "taskgate:worker:"

#: ``taskgate:catalogue`` -> hash of Celery task name -> JSON ``{"module", "queue"}`` (the module
#: declaring it, the queue it goes to), written by each API at start: a worker lacking a task
#: names the module it misses, and ``taskgate doctor`` compares workers with it.
CATALOGUE_KEY = "taskgate:catalogue"

#: ``taskgate:alive:<task id>`` -> the node running it: set by the pool process running the task
#: every ``HEARTBEAT_INTERVAL`` seconds with a TTL of ``HEARTBEAT_TTL``, deleted when the run
#: ends. The reaper leaves the message of a task whose key exists alone, even if the worker's
#: main process stopped heartbeating (frozen, stopped under a debugger).
ALIVE_PREFIX = "taskgate:alive:"

#: ``taskgate:reaper`` -> lock (SET NX EX) so one worker at a time requeues the dead's tasks.
REAPER_LOCK = "taskgate:reaper"

#: Seconds between a worker's heartbeats, and how long one lasts.
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TTL = 10

#: A message unacked for longer than this whose tag no live worker holds is requeued.
REAP_GRACE = 15.0

#: kombu's Redis transport keeps delivered, unacknowledged messages here (see kombu).
KOMBU_UNACKED_INDEX = "unacked_index"
#: ... and their payloads (``[message, exchange, routing key]`` as JSON), by delivery tag.
KOMBU_UNACKED = "unacked"

#: ``taskgate:apikey:<key id>`` -> hash {owner, admin, secret_sha256, created_at}: an API key.
#: Only the secret's hash is stored. Keys are configuration: they live until revoked.
APIKEY_PREFIX = "taskgate:apikey:"

#: ``taskgate:index:<owner>`` -> per-owner history index (like ``taskgate:index``).
OWNER_INDEX_PREFIX = "taskgate:index:"

#: ``taskgate:inflight:<owner>`` -> sorted set of the owner's unfinished task ids (score:
#: submission time); a task leaves it when it ends. For the in-flight quota.
INFLIGHT_PREFIX = "taskgate:inflight:"

#: ``taskgate:rate:<owner>:<minute>`` -> submissions in that minute (expires after 2 minutes).
RATE_PREFIX = "taskgate:rate:"

#: The owner of tasks submitted while auth is off.
ANONYMOUS = "anonymous"

#: ``taskgate:stats`` -> hash of cluster-wide counters, written by the workers' transition
#: scripts when a task ends: ``done:<task>:<state>``, and per histogram ``<wait|run>:<task>:<i>``
#: (count in bucket i), ``<wait|run>_sum:<task>``. Monitoring state: kept 30 days after the
#: last write. ``GET /metrics`` reads it.
STATS_KEY = "taskgate:stats"
STATS_TTL = 30 * 86_400

#: Histogram bucket bounds (seconds) for queue wait and run time.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

#: ``taskgate:idem:<key>`` -> JSON ``[task_id, body digest]`` for an Idempotency-Key, 24 h.
IDEMPOTENCY_PREFIX = "taskgate:idem:"

#: How long an Idempotency-Key is remembered.
IDEMPOTENCY_TTL = 86_400

#: Seconds an HTTP client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 1

#: Signed 64-bit bounds: the range of integers the HTTP API accepts and returns.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def task_record_key(task_id: str) -> str:
    """Key of taskgate's own record of a submitted task."""
    return TASK_RECORD_PREFIX + task_id


def worker_key(hostname: str) -> str:
    """Heartbeat key of a worker."""
    return WORKER_PREFIX + hostname


def alive_key(task_id: str) -> str:
    """Key the pool process running a task keeps alive while it runs."""
    return ALIVE_PREFIX + task_id


def apikey_key(key_id: str) -> str:
    """Where an API key's hash and owner are stored."""
    return APIKEY_PREFIX + key_id


def owner_index_key(owner: str) -> str:
    """History index of one owner."""
    return OWNER_INDEX_PREFIX + owner


def inflight_key(owner: str) -> str:
    """Unfinished tasks of one owner."""
    return INFLIGHT_PREFIX + owner


def events_channel(task_id: str) -> str:
    """Pub/sub channel carrying a task's record after each change."""
    return EVENTS_PREFIX + task_id


def idempotency_key(key: str) -> str:
    """Key remembering which task an Idempotency-Key created."""
    return IDEMPOTENCY_PREFIX + key

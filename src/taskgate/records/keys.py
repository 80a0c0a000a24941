"""Every Redis key and channel taskgate uses: the only place their names are built.

The keys of one task (its record, its events channel, its alive mark) share the hash tag
``{<task id>}``; the global structures (history index, delayed set, dead letters, stats) are
single keys that scripts receive in ``KEYS``, never build themselves. That is what Redis
Cluster asks of scripts, but not all of it: README, "Redis Cluster", says what is missing.

A key naming an owner (``owner_index``, ``inflight``, ``rate``, ``owner_schedules``) is its
family's prefix, which no other key begins with, then the owner, whole: two owners never
share one, whatever characters they hold. A key naming an owner *and* a client's string (an
Idempotency-Key) cannot just join them (``alice`` + ``x:k`` would meet ``alice:x`` + ``k``):
:func:`idempotency` hashes the pair, length-prefixed, into its hash tag.
"""

from __future__ import annotations

import hashlib
import json

#: The namespace of every key below.
NAMESPACE = "taskgate:"

#: ``taskgate:task:{<id>}`` -> hash: the task's record (see :mod:`taskgate.records.model`). No
#: TTL while the task may still run; ``result_ttl`` (``failure_ttl`` for failures) once it ends.
RECORD_PREFIX = "taskgate:task:"

#: ``taskgate:events:{<id>}`` -> pub/sub channel: the record as JSON after every change.
EVENTS_PREFIX = "taskgate:events:"

#: ``taskgate:alive:{<id>}`` -> the node running it: set when the task starts, refreshed every
#: ``HEARTBEAT_INTERVAL`` s by the pool process running it (TTL ``HEARTBEAT_TTL``), deleted
#: when it ends. The reaper leaves the message of a task whose mark exists alone.
ALIVE_PREFIX = "taskgate:alive:"

#: ``taskgate:index`` -> sorted set of task ids by submission time, for the history list;
#: trimmed of ids older than the longest TTL on every submission, and itself expiring.
INDEX = "taskgate:index"

#: ``taskgate:index:<owner>`` -> one owner's history index (like :data:`INDEX`).
OWNER_INDEX_PREFIX = "taskgate:index:"

#: ``taskgate:delayed`` -> sorted set of task ids by due time: delayed submissions and retries
#: wait here (their message in the record's ``message`` field), not in a worker's memory, so a
#: long delay never meets the broker's visibility timeout. Workers move due ones to the queue.
DELAYED = "taskgate:delayed"

#: ``taskgate:expiring`` -> sorted set of the ids of tasks submitted with an expiry, by that
#: expiry (s since the epoch, as :data:`DELAYED`'s scores; the record's ``expires_at`` holds it
#: in ms). Every worker's keeper ends the ones past it that have not started (``expired``) and
#: drops ids whose task started or ended meanwhile.
EXPIRING = "taskgate:expiring"

#: ``taskgate:dead`` -> sorted set of dead-lettered task ids by time. Entries older than
#: ``failure_ttl`` are trimmed; the set expires too.
DEAD = "taskgate:dead"

#: ``taskgate:inflight:<owner>`` -> sorted set of the owner's unfinished task ids (score:
#: submission time); a task leaves it when it ends. For the in-flight quota.
INFLIGHT_PREFIX = "taskgate:inflight:"

#: ``taskgate:rate:<owner>`` -> the owner's submissions in its current rate window: 60 s from
#: its first submission in it (the key's TTL).
RATE_PREFIX = "taskgate:rate:"

#: ``taskgate:idem:{<sha256 of the owner and the key>}`` -> JSON ``[task id, body digest]`` for
#: an Idempotency-Key (see :func:`idempotency`). Until layout 3 it was ``{<owner>:<key>}``.
IDEMPOTENCY_PREFIX = "taskgate:idem:"

#: ``taskgate:stats`` -> hash of cluster-wide counters written when a task ends:
#: ``done:<task>:<state>``, and per histogram ``<wait|run>:<task>:<i>`` (count in bucket i),
#: ``<wait|run>_sum:<task>``; per minute (``<m>``: minutes since the epoch on Redis's clock),
#: ``minute:<m>:<succeeded|failed|cancelled>`` tasks that ended then, ``minute:<m>:wait_sum`` and
#: ``minute:<m>:wait_n`` their queue waits, for the last ``MINUTES_KEPT`` minutes, and
#: ``minute:trimmed`` the latest minute deleted; ``webhook:<outcome>`` webhook delivery attempts
#: (``webhook_result.lua``). Kept ``STATS_TTL`` after the last write; ``GET /metrics`` and
#: ``GET /summary`` read it.
STATS = "taskgate:stats"

#: ``taskgate:worker:<hostname>:<pid>`` -> JSON ``{"tags", "queues", "tasks", "at", "concurrency",
#: "active"}``: a worker's
#: heartbeat, rewritten every ``HEARTBEAT_INTERVAL`` s with a TTL of ``HEARTBEAT_TTL``.
WORKER_PREFIX = "taskgate:worker:"

#: ``taskgate:catalogue`` -> hash of Celery task name -> JSON ``{"module", "queue", "published_at",
#: "by", "withdrawn"}``, written by each API at start and every ``CATALOGUE_REFRESH`` s while it
#: runs, its own entries marked withdrawn when it closes, entries left unrefreshed for
#: ``CATALOGUE_FRESH`` deleted (``producer.startup.Publication``): a worker lacking a task names
#: the module it misses, ``taskgate doctor`` the workers lacking a task that a running API sends.
CATALOGUE = "taskgate:catalogue"

#: ``taskgate:reaper`` -> lock (SET NX EX) so one worker at a time requeues the dead's tasks.
REAPER_LOCK = "taskgate:reaper"

#: ``taskgate:apikey:<key id>`` -> hash {owner, admin, secret_sha256, created_at}: an API key.
APIKEY_PREFIX = "taskgate:apikey:"

#: ``taskgate:apikey-changes`` -> pub/sub channel: the id of an API key just revoked, for every
#: API process to drop it from its cache of verified keys (:mod:`taskgate.api.keycache`).
APIKEY_CHANGES = "taskgate:apikey-changes"

#: ``taskgate:layout`` -> the version of this key layout written in this Redis (see
#: :mod:`taskgate.records.upgrade`).
LAYOUT = "taskgate:layout"

#: ``taskgate:schedule:{<id>}`` -> hash: a schedule's definition and state (see
#: :mod:`taskgate.records.schedules`).
SCHEDULE_PREFIX = "taskgate:schedule:"

#: ``taskgate:schedules:due`` -> sorted set of enabled schedule ids by their next tick (ms): the
#: one indexed lookup every worker's keeper makes for due schedules.
SCHEDULES_DUE = "taskgate:schedules:due"

#: ``taskgate:schedules`` -> sorted set of every schedule id by creation time (ms), for listing.
SCHEDULES = "taskgate:schedules"

#: ``taskgate:schedules-of:<owner>`` -> one owner's schedules (like :data:`SCHEDULES`), for
#: listing and the per-owner limit.
OWNER_SCHEDULES_PREFIX = "taskgate:schedules-of:"

#: ``taskgate:runs:{<schedule id>}`` -> sorted set of a schedule's runs (task ids) by
#: submission time (s), trimmed like the history index.
RUNS_PREFIX = "taskgate:runs:"

#: ``taskgate:session:<sha256 of the cookie's token>`` -> hash {owner, admin, csrf}: a
#: dashboard session (``api.sessions``), expiring.
SESSION_PREFIX = "taskgate:session:"

#: Admission (``records/scripts/admission.lua``): a run of a task with limits that may not start
#: yet waits in taskgate's Redis, not in the broker. Its keys are built in Lua, from the task's
#: name and the run's *lane* (the JSON pair ``[rate key, concurrency key]``), as
#: ``taskgate:adm:<length of name>:<name>:<family>:<part>`` (:func:`admission`), families:
#: ``wait`` (part: a lane) -> list of the lane's waiting task ids, first first; ``ring`` (part: a
#: concurrency key) -> list of the lanes with waiting runs sharing that key's slots, taken in
#: turn; ``slots`` (part: a concurrency key) -> sorted set of the runs holding a slot (score:
#: when taken, ms); ``gcra`` (part: a rate key) -> the rate limit's theoretical arrival time
#: (ms, GCRA); ``lanes`` (no part) -> set of the lanes with waiting runs; ``held`` (no part) -> set
#: of the concurrency keys whose slots are held. The Lua mirrors this prefix (a test checks it).
ADMISSION_PREFIX = "taskgate:adm:"

#: ``taskgate:limits:declared`` -> hash of task name -> the limits its declaration gives, as
#: JSON ``{"rate": [count, period ms, burst], "concurrency": limit}``: written by every API and
#: worker at start and by every submit of a limited task, read by the scripts that admit runs.
LIMITS_DECLARED = "taskgate:limits:declared"

#: ``taskgate:limits:override`` -> hash of task name -> JSON of the limits set at runtime
#: (``PUT /limits/{task}``), each part replacing the declared one (``false``: no such limit).
LIMITS_OVERRIDE = "taskgate:limits:override"

#: ``taskgate:admit-due`` -> sorted set of JSON ``[task name, lane]`` -> when (ms) the lane's
#: rate limit lets its first waiting run go: workers' keepers admit the due ones.
ADMIT_DUE = "taskgate:admit-due"

#: ``taskgate:fair`` -> the window of fair queueing by owner (``TASKGATE_FAIR_BY=owner``,
#: ``TASKGATE_FAIR_WINDOW``), absent when it is off: written by every worker at start.
#: Its admission groups are named by :func:`fair_group`.
FAIR = "taskgate:fair"

#: ``taskgate:fair:weights`` -> hash of owner -> weight w (``TASKGATE_FAIR_WEIGHTS``): with fair
#: queueing on, an owner of weight w has w times :data:`FAIR`'s window (owners not in it: 1).
#: Replaced as a whole by every worker at start, absent when there are none or fair queueing is off.
FAIR_WEIGHTS = "taskgate:fair:weights"

#: The name of a queue list's fair group (admission keys as a task's, see
#: :data:`ADMISSION_PREFIX`); no task name begins with ``@``.
FAIR_GROUP_PREFIX = "@fair:"

#: ``taskgate:outbox`` -> list of the ids of admitted runs for a broker other than the records'
#: Redis (their message in the record): workers' keepers publish them.
OUTBOX = "taskgate:outbox"

#: ``taskgate:outbox-lock`` -> lock (SET NX EX) so one keeper at a time publishes the outbox.
OUTBOX_LOCK = "taskgate:outbox-lock"

#: ``taskgate:wf:{<workflow id>}`` -> hash: a workflow's state and graph (its name, owner,
#: state, counters, normalised spec, and per node ``n:<node>:<field>``: its task id, graph state,
#: pending parents, children; see ``records/scripts/workflow.lua``). No TTL while it runs; the
#: result or failure TTL once it ended, as its nodes' records get then.
WORKFLOW_PREFIX = "taskgate:wf:"

#: ``taskgate:wf-events:{<workflow id>}`` -> pub/sub channel: the workflow's summary as JSON after
#: every change of it or of one of its nodes.
WORKFLOW_EVENTS_PREFIX = "taskgate:wf-events:"

#: ``taskgate:wf-index`` -> sorted set of workflow ids by submission time (as :data:`INDEX`).
WORKFLOW_INDEX = "taskgate:wf-index"

#: ``taskgate:wf-index:<owner>`` -> one owner's workflows (as :data:`OWNER_INDEX_PREFIX`).
OWNER_WORKFLOW_INDEX_PREFIX = "taskgate:wf-index:"

#: Webhooks (``records/webhooks.py``): ``taskgate:webhook:{<id>}`` -> hash: a subscription;
#: ``taskgate:webhooks-of:<owner>`` -> set of an owner's subscription ids (all of them);
#: ``taskgate:webhooks-all`` -> set of admins' subscriptions to every owner's events;
#: ``taskgate:webhooks`` -> set of every subscription id; ``taskgate:webhooks-count`` -> how many
#: there are (the one GET a run's end makes when nobody subscribes). ``taskgate:delivery:{<sub id>:
#: <msg id>}`` -> hash: one event for one subscription, written by the script that ended the run
#: (``records/scripts/webhooks.lua`` builds these names: a mirror, checked by a test);
#: ``taskgate:webhook-due`` -> sorted set of delivery keys by next attempt (ms);
#: ``taskgate:webhook-wake`` -> pub/sub channel: a delivery became due while none was (the
#: deliverers claim at once);
#: ``taskgate:deliveries-of:{<sub id>}`` -> sorted set of a subscription's delivery keys by creation.
WEBHOOK_PREFIX = "taskgate:webhook:"
WEBHOOKS_OF_PREFIX = "taskgate:webhooks-of:"
WEBHOOKS_ALL = "taskgate:webhooks-all"
WEBHOOKS = "taskgate:webhooks"
WEBHOOKS_COUNT = "taskgate:webhooks-count"
DELIVERY_PREFIX = "taskgate:delivery:"
WEBHOOK_DUE = "taskgate:webhook-due"
WEBHOOK_WAKE = "taskgate:webhook-wake"
DELIVERIES_OF_PREFIX = "taskgate:deliveries-of:"

#: kombu's Redis transport keeps delivered, unacknowledged messages in this hash (delivery
#: tag -> ``[message, exchange, routing key]``) and their delivery times in this sorted set.
KOMBU_UNACKED = "unacked"
KOMBU_UNACKED_INDEX = "unacked_index"


def record(task_id: str) -> str:
    """The key of a task's record."""
    return f"{RECORD_PREFIX}{{{task_id}}}"


def events(task_id: str) -> str:
    """The pub/sub channel carrying a task's record after each change."""
    return f"{EVENTS_PREFIX}{{{task_id}}}"


def task_of_channel(channel: str) -> str:
    """The task id of an :func:`events` channel."""
    return channel.removeprefix(EVENTS_PREFIX)[1:-1]


def alive(task_id: str) -> str:
    """The mark a task's running process keeps fresh."""
    return f"{ALIVE_PREFIX}{{{task_id}}}"


def owner_index(owner: str) -> str:
    """The history index of one owner."""
    return OWNER_INDEX_PREFIX + owner


def inflight(owner: str) -> str:
    """The unfinished tasks of one owner."""
    return INFLIGHT_PREFIX + owner


def rate(owner: str) -> str:
    """The owner's submission counter for its current 60 s window."""
    return RATE_PREFIX + owner


def idempotency(owner: str, key: str) -> str:
    """Which task an owner's Idempotency-Key created: the SHA-256 of ``<length of owner>:<owner>
    <key>``, so no two (owner, key) pairs meet, whatever separators they hold, and the hash tag
    is always a clean one (an owner or key holding ``{`` or ``}`` cannot change its slot)."""
    pair = f"{len(owner)}:{owner}{key}".encode()
    return f"{IDEMPOTENCY_PREFIX}{{{hashlib.sha256(pair).hexdigest()}}}"


def worker(hostname: str) -> str:
    """A worker's heartbeat."""
    return WORKER_PREFIX + hostname


def apikey(key_id: str) -> str:
    """Where an API key's hash and owner are stored."""
    return APIKEY_PREFIX + key_id


def schedule(schedule_id: str) -> str:
    """The key of a schedule's hash."""
    return f"{SCHEDULE_PREFIX}{{{schedule_id}}}"


def owner_schedules(owner: str) -> str:
    """The schedules of one owner."""
    return OWNER_SCHEDULES_PREFIX + owner


def runs(schedule_id: str) -> str:
    """The runs of one schedule."""
    return f"{RUNS_PREFIX}{{{schedule_id}}}"


def session(digest: str) -> str:
    """A dashboard session, by the SHA-256 of its cookie's token."""
    return SESSION_PREFIX + digest


def admission(name: str, family: str, part: str = "") -> str:
    """A key of task ``name``'s admission state (see :data:`ADMISSION_PREFIX`); the Lua builds
    the same names."""
    return f"{ADMISSION_PREFIX}{len(name)}:{name}:{family}:{part}"


def due_member(name: str, lane: str) -> str:
    """The member of :data:`ADMIT_DUE` for a lane of task ``name``, byte for byte as
    ``admission.lua``'s ``due_member`` (Lua's ``cjson.encode({name, lane})``) builds it: compact
    JSON with ``/`` escaped as ``\\/`` and DEL as ``\\u007f``, which ``json`` and orjson leave as
    they are (the other escapes agree)."""
    text = json.dumps([name, lane], ensure_ascii=False, separators=(",", ":"))
    return text.replace("/", "\\/").replace("\x7f", "\\u007f")


def fair_group(queue_list: str) -> str:
    """The admission group of fair turns of a queue list (the Redis list a run is pushed to)."""
    return FAIR_GROUP_PREFIX + queue_list


def workflow(workflow_id: str) -> str:
    """The key of a workflow's hash."""
    return f"{WORKFLOW_PREFIX}{{{workflow_id}}}"


def workflow_events(workflow_id: str) -> str:
    """The pub/sub channel carrying a workflow's summary after each change."""
    return f"{WORKFLOW_EVENTS_PREFIX}{{{workflow_id}}}"


def owner_workflows(owner: str) -> str:
    """The workflow index of one owner."""
    return OWNER_WORKFLOW_INDEX_PREFIX + owner


def webhook(webhook_id: str) -> str:
    """The key of a webhook subscription's hash."""
    return f"{WEBHOOK_PREFIX}{{{webhook_id}}}"


def webhooks_of(owner: str) -> str:
    """The webhook subscriptions of one owner."""
    return WEBHOOKS_OF_PREFIX + owner


def delivery(delivery_id: str) -> str:
    """The key of a delivery's hash; ``delivery_id``: ``<subscription id>:<msg id>``."""
    return f"{DELIVERY_PREFIX}{{{delivery_id}}}"


def deliveries_of(webhook_id: str) -> str:
    """A subscription's deliveries by creation."""
    return f"{DELIVERIES_OF_PREFIX}{{{webhook_id}}}"

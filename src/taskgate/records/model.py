"""The task record: its typed form and its one codec to and from the Redis hash.

A record is a hash at :func:`.keys.record`; its fields, as stored:

``name`` the task's catalogue name; ``state`` a :class:`~taskgate.states.TaskState` value;
``owner`` who submitted it (absent while auth is off); ``created_at``, ``started_at``,
``finished_at``, ``next_attempt_at`` whole milliseconds since the epoch (records written
before version 0.1 hold float seconds, still read); ``attempts`` starts counted, ``deliveries``
deliveries of the current attempt, ``seq`` changes published; ``worker`` the node that started
it last; ``progress``, ``result``, ``error``, ``args`` JSON; ``dead_reason`` why it is a dead
letter; ``cancel`` "1" once cancelling was asked; ``cancel_requested_at`` (ms) when it was
first asked, kept whatever state the task then ends in (a running sync task that never checks
runs to its end: ``succeeded`` with this set); ``schedule_id`` the schedule whose run it is,
``tick`` (ms) the tick of that schedule it stands for (absent for a run started by hand);
``replay_of`` the task it replays; ``expires_at`` (ms) its expiry: not started by then, it
ends ``expired`` and never runs; ``waiting_for`` why a ``queued`` run has not gone to its queue
yet (``rate``: its task's rate limit, ``slot``: a free concurrency slot, ``turn``: its turn among
owners, ``parents``: a workflow node's parents have not all succeeded; absent once it has gone);
``workflow_id`` and ``node`` the workflow and node a run belongs to, ``item`` (a map node's run)
its index in the list mapped over, ``skipped`` why a workflow never ran it (ended
``cancelled``); ``trace_id`` the OpenTelemetry trace its submit belongs to (32 hex digits,
absent when none was recorded, see ``taskgate.tracing``) and ``span_id`` its submit's span in
it (16 hex digits: what a replay or requeue of it links to); ``timeline`` JSON, the states it
entered in order (at most 50: the first and the latest; absent while the record's own times
imply it, see :func:`straight`), each ``{"state", "at" (ms), "attempt", "worker" (when
started)}``, each at the record's own time for it (``created_at``, ``started_at``,
``finished_at``), the others (retrying, queued again) on Redis's clock. ``args`` is written at submission (and
at dead-lettering).
Internal fields the scripts keep: ``message`` and ``queue`` (a parked or waiting message and its
list), ``unregistered_since`` (ms), ``lane`` and ``slot`` (see ``admission.lua``).

The same fields, JSON-encoded, are what a change publishes on the task's events channel.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import orjson

from ..states import TaskState

log = logging.getLogger("taskgate.records")

#: JSON as it comes out of ``orjson.loads``.
JSON = Any
#: Why a queued run waits in taskgate's Redis (see ``admission.lua``): its task's rate limit, a
#: free concurrency slot, its turn among owners, or (a workflow node) its parents.
WaitingFor = Literal["rate", "slot", "turn", "parents"]
_WAITING: frozenset[str] = frozenset(get_args(WaitingFor))


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of a task's timeline: the state it entered, when, in which attempt, and on
    which worker (for ``started``)."""

    state: TaskState
    at: datetime
    attempt: int = 0
    worker: str | None = None


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One task as its record says. A field that was stored in a form it cannot have (a time
    out of range, malformed JSON) reads as absent and is named in ``unreadable``: one bad field
    never makes a task, or a listing holding it, unreadable."""

    task_id: str
    name: str | None = None
    state: TaskState | None = None
    owner: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    attempts: int = 0
    deliveries: int = 0
    seq: int = 0
    worker: str | None = None
    progress: JSON = None
    result: JSON = None
    error: JSON = None
    args: JSON = None
    dead_reason: str | None = None
    cancel: bool = False
    cancel_requested_at: datetime | None = None
    schedule_id: str | None = None
    tick: datetime | None = None
    replay_of: str | None = None
    expires_at: datetime | None = None
    waiting_for: WaitingFor | None = None
    workflow_id: str | None = None
    node: str | None = None
    item: int | None = None
    skipped: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    timeline: tuple[Change, ...] = ()
    unreadable: frozenset[str] = field(default=frozenset())

    @property
    def ended(self) -> bool:
        """True once the task will not change state any more."""
        return self.state is not None and self.state.is_terminal

    def newer_than(self, other: TaskRecord | None) -> bool:
        """Whether this (an event's) record is at least as recent as ``other``."""
        return other is None or self.seq >= other.seq


_TIMES = frozenset({"created_at", "started_at", "finished_at", "next_attempt_at", "tick",
                    "cancel_requested_at", "expires_at"})
_COUNTS = frozenset({"attempts", "deliveries", "seq", "item"})
_JSON = frozenset({"progress", "result", "error", "args"})
_TEXT = frozenset({"name", "owner", "worker", "dead_reason", "schedule_id", "replay_of", "workflow_id",
                   "node", "skipped", "trace_id", "span_id"})
_INTERNAL = frozenset({"message", "queue", "unregistered_since"})


def stamp(seconds: float) -> int:
    """A time as records store it: whole milliseconds since the epoch."""
    return round(seconds * 1000)


def to_time(stored: str) -> datetime:
    """A stored time as a UTC datetime (integer ms, or float seconds from older records)."""
    seconds = float(stored) if "." in stored else int(stored) / 1000
    if not math.isfinite(seconds):
        raise ValueError(f"not a time: {stored!r}")
    return datetime.fromtimestamp(seconds, tz=UTC)


def _timeline(text: str) -> tuple[Change, ...]:
    """A stored timeline; an entry that does not fit is left out."""
    changes = []
    entries = orjson.loads(text)
    for entry in entries if isinstance(entries, list) else ():
        try:
            worker = entry.get("worker")
            changes.append(Change(TaskState(entry["state"]), to_time(str(int(entry["at"]))),
                                  int(entry.get("attempt") or 0),
                                  worker if isinstance(worker, str) else None))
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError):
            continue
    return tuple(changes)


def _field(name: str, text: str) -> Any:
    if name == "timeline":
        return _timeline(text)
    if name in _TIMES:
        return to_time(text)
    if name in _COUNTS:
        return int(text)
    if name in _JSON:
        return orjson.loads(text)
    if name == "state":
        return TaskState(text)
    if name == "cancel":
        return text == "1"
    if name == "waiting_for" and text not in _WAITING:
        raise ValueError(f"not a reason to wait: {text!r}")
    return text


def decode(task_id: str, raw: Mapping[Any, Any]) -> TaskRecord:
    """A record from its hash (``HGETALL``, bytes) or its published JSON (str values)."""
    values: dict[str, Any] = {}
    bad: set[str] = set()
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if name in _INTERNAL or not (name in _TIMES or name in _COUNTS or name in _JSON or name in _TEXT
                                     or name in ("state", "cancel", "timeline", "waiting_for")):
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        try:
            values[name] = _field(name, text)
        except (ValueError, TypeError, OverflowError, OSError):
            bad.add(name)
    if bad:
        log.warning("task %s: stored %s unreadable, left out", task_id, ", ".join(sorted(bad)))
    if "timeline" not in values and "timeline" not in bad and isinstance(values.get("state"), TaskState):
        values["timeline"] = straight(values)
    return TaskRecord(task_id=task_id, unreadable=frozenset(bad), **values)


def straight(values: Mapping[str, Any]) -> tuple[Change, ...]:
    """The timeline a record's fields imply when it has none stored (``transition.lua``'s
    ``straight``: the scripts keep a timeline only when it went another way): queued at
    ``created_at``; started at ``started_at`` (attempt 1, on ``worker``); ended at
    ``finished_at``."""
    state: TaskState = values["state"]
    created, started, finished = values.get("created_at"), values.get("started_at"), values.get("finished_at")
    changes = [Change(TaskState.QUEUED, created)] if created else []
    if started and (state is TaskState.STARTED or state.is_terminal):
        changes.append(Change(TaskState.STARTED, started, 1, values.get("worker")))
    if state.is_terminal and finished:
        changes.append(Change(state, finished, 1 if started else 0))
    return tuple(changes)


def decode_event(task_id: str, payload: bytes | str) -> TaskRecord:
    """A record from what a change published on its events channel."""
    return decode(task_id, orjson.loads(payload))


def encode(**fields: datetime | float | TaskState | JSON) -> dict[str, str | bytes | int]:
    """Record fields in their stored form, as the record scripts keep them: times (datetimes, or
    epoch seconds as floats) become ms, states their value, JSON fields JSON, other text as is."""
    out: dict[str, str | bytes | int] = {}
    for name, value in fields.items():
        if name in _TIMES:
            seconds = value.timestamp() if isinstance(value, datetime) else float(value)
            out[name] = stamp(seconds)
        elif name in _JSON:
            out[name] = orjson.dumps(value)
        elif isinstance(value, TaskState):
            out[name] = value.value
        elif isinstance(value, bool):
            out[name] = "1" if value else "0"
        elif isinstance(value, int | str | bytes):
            out[name] = value
        else:
            raise TypeError(f"record field {name} cannot hold {type(value).__name__}")
    return out

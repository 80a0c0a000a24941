"""The Lua scripts that change task records, one typed Python function per script.

Each script lives in ``scripts/<name>.lua`` (shipped in the wheel) and begins by binding its
``KEYS`` and ``ARGV`` to named locals. A line ``--#include <file>.lua`` is replaced by that
file's text when the script is loaded (the one mechanism for shared Lua).

A function here builds a :class:`Call`: the script's name, every key it touches (scripts
never build key names themselves, see :mod:`.keys`), its arguments and how to read its reply.
:class:`Scripts` (blocking, for the worker) and :class:`AsyncScripts` (for the API) run calls.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic, Literal, TypeVar, cast

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.commands.core import AsyncScript, Script

from ..constants import ANONYMOUS
from ..states import TaskState
from . import keys
from .model import stamp

T = TypeVar("T")
#: What Redis accepts as a script argument.
Arg = str | bytes | int | float

#: Every script under ``scripts/`` that can be run (the others are only included).
NAMES = ("submit", "start", "finish", "progress", "cancel", "park", "lost", "dead", "requeue", "unknown",
         "release", "fire", "schedule_put", "expire", "admit", "reclaim",
         "workflow_submit", "workflow_cancel", "workflow_retry", "webhook_put", "webhook_drop",
         "webhook_claim", "webhook_result", "webhook_test", "webhook_retry")

_INCLUDE = re.compile(r"^--#include (\S+\.lua)$", re.MULTILINE)


@functools.cache
def source(name: str) -> str:
    """The Lua text of script ``name``, its includes expanded."""
    text = resources.files(__package__).joinpath("scripts", f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda match: source(match.group(1).removesuffix(".lua")), text)


@dataclass(frozen=True, slots=True)
class AtSend:
    """A script argument read only as its call is sent (``value()``): the submit script's
    deadline counts from the moment the call leaves for Redis, not from when it was made (on a
    busy event loop the two are apart; see ``producer.autopipeline``)."""

    value: Callable[[], Arg]


def resolve(args: Sequence[Arg | AtSend]) -> list[Arg]:
    """``args`` as sent now (each :class:`AtSend` read)."""
    return [arg.value() if isinstance(arg, AtSend) else arg for arg in args]


def _deadline(deadline: float | AtSend | None) -> Arg | AtSend:
    """A script's deadline argument: in ms on Redis's clock, or read as sent; '' for none."""
    return deadline if isinstance(deadline, AtSend) else "" if deadline is None else stamp(deadline)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One run of a script: its keys and arguments, and how to read its reply."""

    script: str
    keys: list[str]
    args: list[Arg | AtSend]
    parse: Callable[[Any], T]


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def _state(reply: Any) -> TaskState | None:
    """A script's reply naming a state; None for nil (no record) or an unknown name."""
    if reply is None or reply is False:
        return None
    try:
        return TaskState(_text(reply))
    except ValueError:
        return None


def _transition(task_id: str, owner: str) -> list[str]:
    """The first five keys of every script including ``transition.lua``."""
    return [keys.record(task_id), keys.events(task_id), keys.alive(task_id), keys.STATS,
            keys.inflight(owner)]


# --- submitting ---------------------------------------------------------------------------------

SubmitKind = Literal["queued", "waiting", "replayed", "conflict", "rate", "inflight", "late"]


@dataclass(frozen=True, slots=True)
class SubmitReply:
    """What the submit script decided. ``task_id``: for ``replayed`` and ``conflict``, the task
    the Idempotency-Key made before; ``retry_after``: for ``rate``, seconds until the owner's
    rate window ends."""

    kind: SubmitKind
    task_id: str | None = None
    retry_after: float | None = None


def _submit_reply(reply: Any) -> SubmitReply:
    said = _text(reply)
    if said == "":
        return SubmitReply("queued")
    if said.startswith("#wait:"):
        return SubmitReply("waiting")
    if said in ("#inflight", "#late"):
        return SubmitReply(cast(SubmitKind, said[1:]))
    if said.startswith("#rate:"):
        return SubmitReply("rate", retry_after=max(0, int(said.removeprefix("#rate:"))) / 1000)
    if said.startswith("!"):
        return SubmitReply("conflict", said[1:])
    return SubmitReply("replayed", said)


#: An :attr:`Enqueue.declared` saying "the limits stored by the processes that declare the task"
#: (this one does not have it).
STORED_LIMITS = "?"


@dataclass(frozen=True, slots=True)
class Enqueue:
    """One new run as ``enqueue.lua`` takes it (submit, batch, replay, a schedule's run): the one
    place its keys and arguments are put in order."""

    task_id: str
    name: str
    #: When it was submitted (epoch seconds).
    now: float
    #: Its owner (:data:`~taskgate.constants.ANONYMOUS` for none).
    owner: str
    #: How long an ended record is kept, and how far back the history index reaches (seconds).
    ttl: int
    horizon: float
    #: The Celery message and the Redis list the script pushes it to; None when the broker is
    #: elsewhere (``message``: the parts' JSON then, kept while it waits for its limits).
    message: bytes
    queue: str | None
    #: Park it in the delayed set until then (epoch seconds); None to send it now.
    due: float | None = None
    idempotency: str | None = None
    digest: str = ""
    #: The owner's quotas (0: none).
    rate_limit: int = 0
    inflight_limit: int = 0
    #: Do nothing after this time on Redis's clock (read as the call is sent, given an AtSend).
    deadline: float | AtSend | None = None
    idempotency_ttl: int = 0
    #: The arguments' JSON, kept in the record.
    arguments: bytes = b""
    replay_of: str | None = None
    #: Never start it after this time (epoch seconds).
    expires_at: float | None = None
    #: Its lane and its task's declared limits (``taskgate.limits``: '' for a task without;
    #: :data:`STORED_LIMITS` when the sender does not know them).
    lane: str = ""
    declared: str = ""
    #: The trace its submit belongs to (32 hex digits, ``taskgate.tracing``), '' without one.
    trace_id: str = ""

    @property
    def anonymous(self) -> bool:
        return self.owner == ANONYMOUS

    def keys(self) -> list[str]:
        return [keys.record(self.task_id), keys.INDEX,
                keys.idempotency(self.owner, self.idempotency) if self.idempotency else "",
                self.queue or "", keys.DELAYED,
                keys.owner_index(self.owner) if not self.anonymous else "",
                keys.inflight(self.owner) if self.inflight_limit else "",
                keys.rate(self.owner), keys.events(self.task_id), keys.EXPIRING]

    def args(self) -> list[Arg | AtSend]:
        return [self.name, repr(self.now), self.ttl, repr(self.horizon),
                self.digest if self.idempotency else "", self.task_id, self.message,
                repr(self.due) if self.due is not None else "", "" if self.anonymous else self.owner,
                self.rate_limit, self.inflight_limit, _deadline(self.deadline), self.idempotency_ttl,
                self.arguments, self.replay_of or "",
                stamp(self.expires_at) if self.expires_at is not None else "", self.lane, self.declared,
                self.trace_id]


def submit(run: Enqueue) -> Call[SubmitReply]:
    """Record ``run`` and send it on its way (see ``admission.lua``), or refuse it (a quota, an
    Idempotency-Key, its deadline)."""
    return Call("submit", run.keys(), run.args(), _submit_reply)


# --- schedules ----------------------------------------------------------------------------------

FireMode = Literal["fire", "miss", "now"]


def fire(schedule_id: str, *, expected: int, next_due: int, tick: int | None, mode: FireMode,
         last_task_id: str | None, run: Enqueue, problem: str = "") -> Call[str]:
    """Claim a schedule's tick (its due score still ``expected``, in ms) and queue its ``run``
    (mode ``fire``), or only move it on to ``next_due`` (``miss``, with ``problem`` saying why if
    not a missed tick; ``run`` is then not sent), or queue a run now outside the schedule
    (``now``). The script's verdict: ``fired``, ``fired-out`` (the caller publishes the run: the
    broker is elsewhere), ``missed``, ``overlap``, ``taken``, ``stale``, or a refusal of the run
    (``#rate:<ms>``, ``#inflight``)."""
    return Call("fire", [
        keys.schedule(schedule_id), keys.SCHEDULES_DUE, keys.runs(schedule_id),
        keys.record(last_task_id) if last_task_id else "", *run.keys(),
    ], [schedule_id, expected, next_due, "" if tick is None else tick, mode, last_task_id or "", problem,
        *run.args()], _text)


PutMode = Literal["create", "upsert", "update"]


def schedule_put(schedule_id: str, owner: str, *, mode: PutMode, limit: int, now: float,
                 next_due: int | None, enabled: bool | None, fields: Mapping[str, Arg]) -> Call[str]:
    """Create or change a schedule (``fields`` in their stored forms), keeping its indexes and
    due time in step: ``created``, ``updated``, ``#exists``, ``#missing`` or ``#limit``."""
    pairs: list[Arg] = []
    for field, value in fields.items():
        pairs += [field, value]
    return Call("schedule_put", [keys.schedule(schedule_id), keys.SCHEDULES_DUE, keys.SCHEDULES,
                                 keys.owner_schedules(owner)],
                [schedule_id, mode, limit, stamp(now), "" if next_due is None else next_due,
                 "" if enabled is None else ("1" if enabled else "0"), *pairs], _text)


# --- the worker's transitions -------------------------------------------------------------------

StartVerdict = Literal["run", "cancelled", "expired", "finished", "dead", "arguments", "owner"]


@dataclass(frozen=True, slots=True)
class StartReply:
    """What the start script decided; ``owner``: for verdict ``owner``, the record's owner."""

    verdict: StartVerdict
    owner: str | None = None


def _start_reply(reply: Any) -> StartReply:
    said = _text(reply)
    if said.startswith("owner:"):
        return StartReply("owner", said.removeprefix("owner:"))
    return StartReply(cast(StartVerdict, said))


def start(task_id: str, owner: str, *, name: str, now: float, ttl: int, max_deliveries: int,
          node: str, failure_ttl: int, arguments: bytes = b"") -> Call[StartReply]:
    """Before a run: ``run`` (now started, marked alive), ``cancelled`` (never run it; the
    record expires in ``ttl``), ``expired`` (never run it: it was not started before its expiry,
    its ``expires_at``, by ``now``; ended ``expired`` if it was not yet, the record expiring in
    ``ttl``), ``finished`` (a duplicate delivery) or ``dead`` (delivered
    ``max_deliveries`` times: failed and dead-lettered with ``arguments``, expiring in
    ``failure_ttl``); ``arguments`` when it would be dead but no ``arguments`` were given
    (nothing changed: call again with them; they are sent only on this rare path); ``owner``
    when the record's owner is not ``owner`` (nothing changed: call again with
    :attr:`StartReply.owner`)."""
    return Call("start", [*_transition(task_id, owner), keys.DEAD],
                [task_id, name, repr(now), ttl, max_deliveries, node, failure_ttl, arguments, owner],
                _start_reply)


Move = Literal["succeeded", "failed", "cancelled", "retrying", "refused"]


@dataclass(frozen=True, slots=True)
class Moved:
    """What a guarded script did: ``changed`` False when the record's state (``state``; None
    without a record) may not make ``move`` (nothing changed: a duplicate or late write)."""

    move: str
    changed: bool
    state: TaskState | None


def _moved(move: str) -> Callable[[Any], Moved]:
    def parse(reply: Any) -> Moved:
        if not reply:
            return Moved(move, False, None)
        return Moved(move, bool(reply[0]), _state(reply[1]))
    return parse


def _finish(task_id: str, owner: str, move: Move, *, ttl: int, at: float, error: bytes = b"",
            result: bytes = b"") -> Call[Moved]:
    return Call("finish", _transition(task_id, owner), [task_id, move, ttl, stamp(at), error, result],
                _moved(move))


def succeeded(task_id: str, owner: str, *, now: float, ttl: int, result: bytes) -> Call[Moved]:
    """A started task returned ``result`` (JSON): it ends ``succeeded``, expiring in ``ttl`` s."""
    return _finish(task_id, owner, "succeeded", ttl=ttl, at=now, result=result)


def failed(task_id: str, owner: str, *, now: float, ttl: int, error: bytes) -> Call[Moved]:
    """A started task raised ``error`` (its JSON envelope), for good: it ends ``failed``."""
    return _finish(task_id, owner, "failed", ttl=ttl, at=now, error=error)


def cancelled(task_id: str, owner: str, *, now: float, ttl: int) -> Call[Moved]:
    """A started task stopped on request (it saw its cancel flag, or was terminated)."""
    return _finish(task_id, owner, "cancelled", ttl=ttl, at=now)


def retrying(task_id: str, owner: str, *, due: float, error: bytes) -> Call[Moved]:
    """A started task raised a transient ``error`` and Celery sends its next attempt for
    ``due`` (a broker whose delays are not parked, see :func:`park`); no TTL meanwhile."""
    return _finish(task_id, owner, "retrying", ttl=0, at=due, error=error)


def refused(task_id: str, owner: str, *, now: float, ttl: int, error: bytes) -> Call[Moved]:
    """A ``queued`` or ``retrying`` run that will never run ends ``failed``: the broker did
    not take its message (a schedule's run), or the worker refused the message."""
    return _finish(task_id, owner, "refused", ttl=ttl, at=now, error=error)


def progress(task_id: str, owner: str, progress: bytes) -> Call[Moved]:
    """A running task's progress (JSON), kept and published only while it is ``started``."""
    return Call("progress", _transition(task_id, owner), [task_id, progress], _moved("progress"))


def park(task_id: str, owner: str, *, due: float, message: bytes, queue: str, error: bytes) -> Call[str]:
    """A transient failure: the next attempt waits in the delayed set until ``due``."""
    return Call("park", [*_transition(task_id, owner), keys.DELAYED],
                [task_id, repr(due), message, queue, error], _text)


def lost(task_id: str, owner: str, *, now: float, ttl: int, error: bytes,
         state: Literal["failed", "queued"]) -> Call[TaskState | None]:
    """The process running the task vanished: a still-``started`` record becomes ``state``.
    The state the record is left in (None without a record)."""
    return Call("lost", _transition(task_id, owner), [task_id, repr(now), ttl, error, state], _state)


def dead(task_id: str, owner: str, *, ttl: int, now: float, error: bytes, arguments: bytes,
         reason: str) -> Call[str]:
    """Retries ran out: fail the task and add it to the dead letters, arguments kept."""
    return Call("dead", [*_transition(task_id, owner), keys.DEAD],
                [task_id, ttl, repr(now), error, arguments, reason], _text)


def unknown(task_id: str, now: float) -> Call[tuple[TaskState | None, float] | None]:
    """A worker lacks the task: remember when one first did. (state, first time in seconds),
    None without a record."""
    def parse(reply: Any) -> tuple[TaskState | None, float] | None:
        if not reply:
            return None
        return _state(reply[0]), int(reply[1]) / 1000
    return Call("unknown", [keys.record(task_id)], [stamp(now)], parse)


def _admitted(reply: Any) -> tuple[int, float | None]:
    count, wait_ms = int(reply[0]), int(reply[1])
    return count, None if wait_ms < 0 else wait_ms / 1000


def admit(batch: int) -> Call[tuple[int, float | None]]:
    """Admit the runs of at most ``batch`` lanes due in ``ADMIT_DUE`` (by Redis's clock) that
    their limits let go now: (the count admitted, seconds until the next lane is due, None if
    none is)."""
    return Call("admit", [keys.ADMIT_DUE], [batch], _admitted)


Hold = Literal["slot", "turn"]


def reclaim(group: str, hold: Hold = "slot") -> Call[int]:
    """Give back the places of admission group ``group`` (a task's concurrency ``slot``s, or a
    queue's fair ``turn``s: :func:`.keys.fair_group`) held by runs that hold them no more, and
    admit the next runs; the count reclaimed."""
    return Call("reclaim", [], [group, hold], int)


def release(now: float, due: Sequence[tuple[str, str | None]]) -> Call[int]:
    """Move these due delayed tasks (id, the queue list their record named) to their queues;
    one past its expiry is not queued but left to :func:`expire` (in :data:`.keys.EXPIRING`,
    due). The number moved."""
    task_keys: list[str] = []
    for task_id, queue in due:
        task_keys += [keys.record(task_id), queue or ""]
    return Call("release", [keys.DELAYED, keys.EXPIRING, *task_keys],
                [repr(now), *(task_id for task_id, _ in due)], int)


ExpireVerdict = Literal["expired", "skipped", "missing", "later", "owner"]


@dataclass(frozen=True, slots=True)
class ExpireReply:
    """What the expire script decided; ``owner``: for verdict ``owner``, the record's owner."""

    verdict: ExpireVerdict
    owner: str | None = None


def _expire_reply(reply: Any) -> ExpireReply:
    said = _text(reply)
    if said.startswith("owner:"):
        return ExpireReply("owner", said.removeprefix("owner:"))
    return ExpireReply(cast(ExpireVerdict, said))


def expire(task_id: str, owner: str, *, now: float, ttl: int) -> Call[ExpireReply]:
    """The expiry sweep, for a task in :data:`.keys.EXPIRING` due by ``now``: ``expired`` (it
    had not started and its ``expires_at`` passed: ended ``expired``, off the delayed set, the
    record expiring in ``ttl``), ``skipped`` (it started or ended: it only leaves the set),
    ``missing`` (no record: it leaves the set), ``later`` (not yet: back in the set at its
    expiry), ``owner`` when the record's owner is not ``owner`` (nothing changed: call again
    with :attr:`ExpireReply.owner`)."""
    return Call("expire", [*_transition(task_id, owner), keys.DELAYED, keys.EXPIRING],
                [task_id, repr(now), ttl, owner], _expire_reply)


# --- the API's control --------------------------------------------------------------------------

def cancel(task_id: str, owner: str, *, now: float, ttl: int) -> Call[str]:
    """``cancelled`` (it was queued or retrying), ``cancelling`` (running: flagged),
    ``missing``, or ``already:<state>``. Either of the first two records ``cancel_requested_at``
    (``now``; a later ask keeps the first), which stays whatever state the task ends in."""
    return Call("cancel", [*_transition(task_id, owner), keys.DELAYED], [task_id, repr(now), ttl], _text)


def requeue(task_id: str, owner: str, *, queue: str | None, message: bytes, now: float,
            trace_id: str = "") -> Call[str]:
    """Queue a dead letter again (``queue``: the Redis list to push ``message`` to; None when
    the broker is elsewhere; ``trace_id``: its new run's trace, kept in the record when given).
    ``queued``, ``waiting`` (for its task's limits), or ``missing`` when it is not a dead
    letter."""
    return Call("requeue", [*_transition(task_id, owner), keys.DEAD, queue or ""],
                [task_id, message, repr(now), trace_id], _text)


# --- running ------------------------------------------------------------------------------------

class Scripts:
    """Runs calls on a blocking client (the worker's)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._scripts: dict[str, Script] = {name: client.register_script(source(name)) for name in NAMES}

    def __call__(self, call: Call[T]) -> T:
        return call.parse(self._scripts[call.script](keys=call.keys, args=resolve(call.args)))

    def many(self, calls: Sequence[Call[T]]) -> list[T]:
        """Run ``calls`` in one round trip (a pipeline, not a transaction), their replies in order."""
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            self._scripts[call.script](keys=call.keys, args=resolve(call.args), client=pipe)
        return [call.parse(reply) for call, reply in zip(calls, pipe.execute(), strict=True)]


class AsyncScripts:
    """Runs calls on an asyncio client (the API's)."""

    def __init__(self, client: AsyncRedis) -> None:
        self.client = client
        self._scripts: dict[str, AsyncScript] = {name: client.register_script(source(name))
                                                 for name in NAMES}

    async def __call__(self, call: Call[T]) -> T:
        return call.parse(await self._scripts[call.script](keys=call.keys, args=resolve(call.args)))

    async def many(self, calls: Sequence[Call[T]]) -> list[T]:
        """Run ``calls`` in one round trip (a pipeline, not a transaction), their replies in order."""
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            await self._scripts[call.script](keys=call.keys, args=resolve(call.args), client=pipe)
        return [call.parse(reply) for call, reply in zip(calls, await pipe.execute(), strict=True)]

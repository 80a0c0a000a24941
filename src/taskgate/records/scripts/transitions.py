"""The worker's transitions of a run, one guarded script each: before it (:func:`start`), its
end (:func:`succeeded`, :func:`failed`, :func:`cancelled`, :func:`refused`, through
``finish.lua``), a retry (:func:`retrying`, :func:`park`), its progress, a lost or dead run, and
a worker lacking its task (:func:`unknown`). All but :func:`unknown` include
``transition.lua``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ...states import TaskState
from .. import keys
from ..model import stamp
from .calls import Call, Verdict, _state, _text, _transition, _verdict

StartVerdict = Literal["run", "cancelled", "expired", "finished", "dead", "arguments", "owner"]


#: What the start script decided (see :func:`start`).
StartReply = Verdict[StartVerdict]


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
                _verdict)


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

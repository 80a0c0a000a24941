"""Submitting: a new run as ``enqueue.lua`` takes it (:class:`Enqueue`, the one place its keys
and arguments are put in order), and the submit script's call and reply (:func:`submit`,
:class:`SubmitReply`). A schedule's run goes through the same :class:`Enqueue`
(:func:`.scheduling.fire`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from ...constants import ANONYMOUS
from .. import keys
from ..model import stamp
from .calls import Arg, AtSend, Call, _deadline, _text

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
    #: The trace its submit belongs to (32 hex digits, ``taskgate.tracing``) and the submit's
    #: span in it (16), '' without one: what a replay or requeue of it links to.
    trace_id: str = ""
    span_id: str = ""

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
                self.trace_id, self.span_id]


def submit(run: Enqueue) -> Call[SubmitReply]:
    """Record ``run`` and send it on its way (see ``admission.lua``), or refuse it (a quota, an
    Idempotency-Key, its deadline)."""
    return Call("submit", run.keys(), run.args(), _submit_reply)

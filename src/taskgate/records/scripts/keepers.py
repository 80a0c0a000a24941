"""The scripts the worker's keepers run: admission's (:func:`admit` the runs their limits let go
now, :func:`reclaim` places held by runs that hold them no more; see ``admission.lua``), and
recovery's (:func:`release` due delayed runs to their queues, :func:`expire` runs never started
before their expiry)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from .. import keys
from .calls import Call, Verdict, _transition, _verdict


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
    queue's fair ``turn``s: :func:`~taskgate.records.keys.fair_group`) held by runs that hold
    them no more, and admit the next runs; the count reclaimed."""
    return Call("reclaim", [], [group, hold], int)


def release(now: float, due: Sequence[tuple[str, str | None]]) -> Call[int]:
    """Move these due delayed tasks (id, the queue list their record named) to their queues;
    one past its expiry is not queued but left to :func:`expire` (in :data:`~taskgate.records.keys.EXPIRING`,
    due). The number moved."""
    task_keys: list[str] = []
    for task_id, queue in due:
        task_keys += [keys.record(task_id), queue or ""]
    return Call("release", [keys.DELAYED, keys.EXPIRING, *task_keys],
                [repr(now), *(task_id for task_id, _ in due)], int)


ExpireVerdict = Literal["expired", "skipped", "missing", "later", "owner"]


#: What the expire script decided (see :func:`expire`).
ExpireReply = Verdict[ExpireVerdict]


def expire(task_id: str, owner: str, *, now: float, ttl: int) -> Call[ExpireReply]:
    """The expiry sweep, for a task in :data:`~taskgate.records.keys.EXPIRING` due by ``now``: ``expired`` (it
    had not started and its ``expires_at`` passed: ended ``expired``, off the delayed set, the
    record expiring in ``ttl``), ``skipped`` (it started or ended: it only leaves the set),
    ``missing`` (no record: it leaves the set), ``later`` (not yet: back in the set at its
    expiry), ``owner`` when the record's owner is not ``owner`` (nothing changed: call again
    with :attr:`ExpireReply.owner`)."""
    return Call("expire", [*_transition(task_id, owner), keys.DELAYED, keys.EXPIRING],
                [task_id, repr(now), ttl, owner], _verdict)

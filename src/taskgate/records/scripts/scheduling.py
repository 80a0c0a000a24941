"""A schedule's scripts: claiming its tick and queueing its run (``fire.lua``, :func:`fire`)
and creating or changing it (``schedule_put.lua``, :func:`schedule_put`). The schedule record
itself is :mod:`taskgate.records.schedules`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from .. import keys
from ..model import stamp
from .calls import Arg, Call, _text
from .submitting import Enqueue

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

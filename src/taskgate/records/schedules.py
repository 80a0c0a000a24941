"""The schedule record: its typed form and its codec to and from the Redis hash.

A schedule is a hash at :func:`.keys.schedule`; its fields, as stored:

``name`` its display name; ``task`` the catalogue name of the task it runs; ``celery_name`` and
``queue`` where its runs go; ``arguments`` JSON; ``cron`` and ``timezone``, or ``every``
(seconds); ``overlap`` ``allow``/``skip``; ``catchup`` ``none``/``one``; ``enabled`` "1"/"0";
``owner``; ``declared`` the module declaring it in code (absent for one made over HTTP);
``digest`` of a declared definition; times in whole ms since the epoch: ``created_at``,
``updated_at``, ``anchor`` (where an ``every`` schedule's ticks start), ``next_run_at``,
``last_run_at`` (when its last run was queued), ``last_tick`` (the tick it stood for),
``missed_at``; ``last_task_id``; counts ``missed`` (catch-ups that fired nothing) and
``skipped`` (ticks skipped by ``overlap: skip``); ``problem``: why it fires nothing, if so;
``traceparent``: the span that created it, when it was created traced (its runs link to it).

Due schedules are found through :data:`.keys.SCHEDULES_DUE` alone (score: the next tick in ms).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from ..schedule import Timing
from . import keys
from .model import to_time

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline as AsyncPipeline
    from redis.client import Pipeline

log = logging.getLogger("taskgate.records")


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One schedule as its hash says; a field stored in a form it cannot have reads as absent
    and is named in ``unreadable``."""

    schedule_id: str
    name: str | None = None
    task: str | None = None
    celery_name: str | None = None
    queue: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    overlap: str = "allow"
    catchup: str = "none"
    enabled: bool = True
    owner: str | None = None
    declared: str | None = None
    digest: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    anchor: datetime | None = None
    next_run_at: datetime | None = None
    last_run_at: datetime | None = None
    last_tick: datetime | None = None
    missed_at: datetime | None = None
    last_task_id: str | None = None
    missed: int = 0
    skipped: int = 0
    problem: str | None = None
    traceparent: str | None = None
    unreadable: frozenset[str] = field(default=frozenset())

    def timing(self) -> Timing:
        """When it fires (raises ``InvalidArguments`` if the stored definition is unusable)."""
        return Timing(cron=self.cron, every=self.every, timezone=self.timezone, overlap=self.overlap,  # type: ignore[arg-type]
                      catchup=self.catchup)  # type: ignore[arg-type]


_TIMES = frozenset({"created_at", "updated_at", "anchor", "next_run_at", "last_run_at", "last_tick",
                    "missed_at"})
_TEXT = frozenset({"name", "task", "celery_name", "queue", "cron", "timezone", "overlap", "catchup", "owner",
                   "declared", "digest", "last_task_id", "problem", "traceparent"})


def _field(name: str, text: str) -> Any:
    if name in _TIMES:
        return to_time(text)
    if name in ("missed", "skipped"):
        return int(text)
    if name == "every":
        return float(text)
    if name == "enabled":
        return text == "1"
    if name == "arguments":
        value = orjson.loads(text)
        if not isinstance(value, dict):
            raise ValueError("arguments are not an object")
        return value
    return text


def decode(schedule_id: str, raw: Mapping[bytes, bytes]) -> ScheduleRecord:
    """A schedule from its hash (``HGETALL``)."""
    values: dict[str, Any] = {}
    bad: set[str] = set()
    for key, value in raw.items():
        name = key.decode()
        if not (name in _TIMES or name in _TEXT or name in ("missed", "skipped", "every", "enabled",
                                                             "arguments")):
            continue
        text = value.decode(errors="replace")
        if text == "":
            continue  # cleared (a cron schedule has no ``every``, and the other way round)
        try:
            values[name] = _field(name, text)
        except (ValueError, TypeError, OverflowError, OSError):
            bad.add(name)
    if bad:
        log.warning("schedule %s: stored %s unreadable, left out", schedule_id, ", ".join(sorted(bad)))
    return ScheduleRecord(schedule_id=schedule_id, unreadable=frozenset(bad), **values)


def definition(timing: Timing) -> dict[str, str | bytes]:
    """The stored fields of ``timing`` (cron and timezone, or every; overlap; catchup)."""
    fields: dict[str, str | bytes] = {"overlap": timing.overlap, "catchup": timing.catchup}
    if timing.cron is not None:
        fields |= {"cron": timing.cron, "timezone": timing.timezone, "every": ""}
    else:
        fields |= {"every": repr(timing.every), "cron": "", "timezone": "UTC"}
    return fields


def drop(pipe: Pipeline | AsyncPipeline, schedule_id: str, owner: str) -> None:
    """Queue on ``pipe`` (a transaction, blocking or asyncio) what deletes a schedule and its
    indexes; its runs stay, as tasks. ``owner``: whose index lists it."""
    pipe.delete(keys.schedule(schedule_id), keys.runs(schedule_id))
    pipe.zrem(keys.SCHEDULES_DUE, schedule_id)
    pipe.zrem(keys.SCHEDULES, schedule_id)
    pipe.zrem(keys.owner_schedules(owner), schedule_id)

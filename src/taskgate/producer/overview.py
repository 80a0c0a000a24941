"""The whole system at a glance (``GET /summary``, ``GET /workers``): the live workers from their
heartbeats, what waits and runs now, and per minute what ended and how long it waited, from the
counts the workers' transition scripts keep in :data:`.keys.STATS`."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

from ..brokers import Broker
from ..records import keys
from ..records.workers import async_heartbeats
from ..registry import TaskSpec
from .backend import Backend

#: Minutes in the summary's last hour (the stats keep ``MINUTES_KEPT``, one more).
HOUR = 60

#: Minutes the summary's chart covers.
CHART_MINUTES = 15

#: What one minute counts (``minute:<m>:<field>`` in the stats hash): tasks ended per state,
#: then their waits (transition.lua's MINUTE_FIELDS, in its order).
_ENDED = ("succeeded", "failed", "cancelled", "expired")
MINUTE_FIELDS = (*_ENDED, "wait_sum", "wait_n")


@dataclass(frozen=True, slots=True)
class WorkerView:
    """One live worker as its last heartbeat says."""

    name: str
    queues: tuple[str, ...]
    concurrency: int
    active: int
    tasks: int
    last_heartbeat: datetime


@dataclass(frozen=True, slots=True)
class Minute:
    """One minute (starting at ``at``): tasks that ended in it by state, and their mean queue
    wait (None when none of them had started)."""

    at: datetime
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    wait_avg: float | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    """Now: tasks waiting in queues (None while the broker cannot tell), delayed (countdown,
    eta, retry backoff), running, dead letters, live workers and their concurrency. The last
    hour: tasks ended by state. ``minutes``: the last ``CHART_MINUTES``, oldest first."""

    queued: int | None
    delayed: int
    running: int
    dead_letters: int
    workers: int
    concurrency: int
    last_hour: dict[str, int]
    minutes: list[Minute] = field(default_factory=list)


async def workers(backend: Backend) -> list[WorkerView]:
    """The live workers, by name."""
    async with backend.deadline():
        beats = await async_heartbeats(backend.redis)
    return [WorkerView(name, beat.queues, beat.concurrency, beat.active, len(beat.tasks),
                       datetime.fromtimestamp(beat.at, tz=UTC))
            for name, beat in sorted(beats.items())]


def _number(raw: bytes | None) -> float:
    try:
        value = float(raw) if raw is not None else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value >= 0 else 0.0  # no stored value fails a read


async def summary(backend: Backend, broker: Broker, catalogue: dict[str, TaskSpec]) -> Summary:
    """The summary, read in one round trip to Redis, then the depths of the queues tasks are sent
    to or live workers consume."""
    redis = backend.redis
    async with backend.deadline():
        seconds, micros = await redis.time()  # the clock the minutes are on
        minute = (seconds * 1000 + micros // 1000) // 60_000
        hour = range(minute - HOUR + 1, minute + 1)  # the current minute and the 59 before it
        fields = [f"minute:{m}:{name}" for m in hour for name in MINUTE_FIELDS]
        pipe = redis.pipeline(transaction=False)
        pipe.hmget(keys.STATS, fields)
        pipe.zcard(keys.DELAYED)
        pipe.zcard(keys.DEAD)
        counts, delayed, dead = await pipe.execute()
        beats = await async_heartbeats(redis)
    default = backend.settings.default_queue
    queues = sorted({spec.queue or default for spec in catalogue.values()} | {default}
                    | {queue for beat in beats.values() for queue in beat.queues})
    async with backend.deadline("broker"):
        depths = await asyncio.gather(*(broker.depth(name) for name in queues))
    values = [_number(raw) for raw in cast(list[bytes | None], counts)]
    per_minute: list[Minute] = []
    last_hour = dict.fromkeys(_ENDED, 0)
    width, ended_n = len(MINUTE_FIELDS), len(_ENDED)
    for i, m in enumerate(hour):
        row = values[i * width:(i + 1) * width]
        ended = dict(zip(_ENDED, (int(v) for v in row[:ended_n]), strict=True))
        wait_sum, wait_n = row[ended_n], row[ended_n + 1]
        for state, count in ended.items():
            last_hour[state] += count
        per_minute.append(Minute(datetime.fromtimestamp(m * 60, tz=UTC), **ended,
                                 wait_avg=round(wait_sum / wait_n, 3) if wait_n else None))
    return Summary(
        queued=None if any(depth is None for depth in depths) else sum(depth or 0 for depth in depths),
        delayed=int(delayed), running=sum(beat.active for beat in beats.values()), dead_letters=int(dead),
        workers=len(beats), concurrency=sum(beat.concurrency for beat in beats.values()),
        last_hour=last_hour, minutes=per_minute[-CHART_MINUTES:])

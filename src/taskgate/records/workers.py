"""The workers as Redis knows them: their heartbeats (:data:`.keys.WORKER_PREFIX`) and the
API's catalogue (:data:`.keys.CATALOGUE`) that a worker's tasks are compared with."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, cast

import orjson
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from . import keys

if TYPE_CHECKING:
    from ..registry import TaskSpec


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """What a worker's main process says every ``HEARTBEAT_INTERVAL`` seconds: the delivery tags
    of the messages it holds, the queues it consumes, the tasks it has, and when; how many tasks
    it runs at once (``concurrency``) and was running then (``active``)."""

    tags: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()
    at: float = 0.0
    concurrency: int = 0
    active: int = 0

    def encode(self) -> bytes:
        """The stored form: JSON ``{"tags", "queues", "tasks", "at", "concurrency", "active"}``."""
        return orjson.dumps({"tags": self.tags, "queues": self.queues, "tasks": self.tasks, "at": self.at,
                             "concurrency": self.concurrency, "active": self.active})


class CatalogueEntry(TypedDict):
    """One task of an API's catalogue, as stored in :data:`.keys.CATALOGUE`."""

    module: str
    queue: str


def heartbeats(client: Redis) -> dict[str, Heartbeat]:
    """The live workers' heartbeats (see :data:`~taskgate.records.keys.WORKER_PREFIX`), by worker;
    one that does not parse reads as empty."""
    names = list(client.scan_iter(match=f"{keys.WORKER_PREFIX}*", count=1000))
    beats = cast(list[bytes | None], client.mget(names)) if names else []
    return {name.decode().removeprefix(keys.WORKER_PREFIX): parse_heartbeat(beat)
            for name, beat in zip(names, beats, strict=True) if beat}


def parse_heartbeat(beat: bytes) -> Heartbeat:
    """One stored heartbeat; what does not parse reads as empty (a worker holding nothing)."""
    try:
        parsed = orjson.loads(beat)
    except orjson.JSONDecodeError:
        return Heartbeat()
    if not isinstance(parsed, dict):
        return Heartbeat()

    def names(field: str) -> tuple[str, ...]:
        value = parsed.get(field)
        return tuple(str(item) for item in value) if isinstance(value, list) else ()

    def count(field: str) -> int:
        value = parsed.get(field)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    at = parsed.get("at")
    return Heartbeat(names("tags"), names("queues"), names("tasks"),
                     float(at) if isinstance(at, int | float) else 0.0, count("concurrency"), count("active"))


def catalogue_entries(specs: Iterable[TaskSpec], default_queue: str) -> dict[str, CatalogueEntry]:
    """An API's catalogue as workers and doctor compare it: Celery name -> {module, queue}."""
    return {spec.celery_name: {"module": spec.func.__module__, "queue": spec.queue or default_queue}
            for spec in specs}


def parse_entry(raw: bytes | None) -> CatalogueEntry | None:
    """One stored catalogue entry; None when absent or unreadable."""
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    if not (isinstance(parsed, dict) and isinstance(parsed.get("module"), str)
            and isinstance(parsed.get("queue"), str)):
        return None
    return CatalogueEntry(module=parsed["module"], queue=parsed["queue"])


def read_catalogue(client: Redis) -> dict[str, CatalogueEntry]:
    """The catalogue the APIs published (Celery name -> entry); unreadable entries left out."""
    stored = cast(dict[bytes, bytes], client.hgetall(keys.CATALOGUE))
    entries = {name.decode(): parse_entry(raw) for name, raw in stored.items()}
    return {name: entry for name, entry in entries.items() if entry is not None}


def missing_tasks(beat: Heartbeat, catalogue: dict[str, CatalogueEntry]) -> dict[str, CatalogueEntry]:
    """The entries of ``catalogue`` (Celery name -> {module, queue}) that a worker consuming their
    queue lacks, judged from its heartbeat."""
    queues, tasks = set(beat.queues), set(beat.tasks)
    return {name: entry for name, entry in sorted(catalogue.items())
            if entry.get("queue") in queues and name not in tasks}


async def async_heartbeats(redis: AsyncRedis) -> dict[str, Heartbeat]:
    """The live workers' heartbeats by worker (the asyncio twin of :func:`heartbeats`)."""
    names = [name async for name in redis.scan_iter(match=f"{keys.WORKER_PREFIX}*", count=1000)]
    beats = cast(list[bytes | None], await redis.mget(names)) if names else []
    return {name.decode().removeprefix(keys.WORKER_PREFIX): parse_heartbeat(beat)
            for name, beat in zip(names, beats, strict=True) if beat}

"""The workers as Redis knows them: their heartbeats (:data:`.keys.WORKER_PREFIX`) and the
APIs' catalogue (:data:`.keys.CATALOGUE`) that a worker's tasks are compared with."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, cast

import orjson
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from ..constants import CATALOGUE_REFRESH
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


#: An entry of :data:`.keys.CATALOGUE` published longer ago than this (seconds) is stale: no
#: running API has republished it (each does every ``CATALOGUE_REFRESH`` s), so none sends it now.
CATALOGUE_FRESH = 3 * CATALOGUE_REFRESH


class CatalogueEntry(TypedDict):
    """One task of an API's catalogue, as stored in :data:`.keys.CATALOGUE` (besides when it was
    published: see :func:`encode_entry`)."""

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


def encode_entry(entry: CatalogueEntry, published_at: float, by: str, withdrawn: bool = False) -> bytes:
    """The stored form: JSON ``{"module", "queue", "published_at", "by", "withdrawn"}``: when
    (epoch seconds) and by which open Taskgate (see ``producer.startup.Publication``) it was
    published, and whether that Taskgate has closed since (the entry still names the module for
    workers, but no longer counts as sent)."""
    return orjson.dumps({**entry, "published_at": published_at, "by": by, "withdrawn": withdrawn})


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One stored catalogue entry as read back (see :func:`encode_entry`): ``published_at``
    None, ``by`` "" and ``withdrawn`` False when it does not say (an earlier version wrote it)."""

    entry: CatalogueEntry
    published_at: float | None = None
    by: str = ""
    withdrawn: bool = False


def parse_entry(raw: bytes | None) -> CatalogueEntry | None:
    """One stored catalogue entry; None when absent or unreadable."""
    stored = parse_stored(raw)
    return stored.entry if stored is not None else None


def parse_stored(raw: bytes | None) -> StoredEntry | None:
    """One stored catalogue entry with when and by whom it was published; None when absent or
    unreadable (what does not parse in ``published_at``, ``by`` or ``withdrawn`` reads as not
    said)."""
    try:
        parsed = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None
    if not (isinstance(parsed, dict) and isinstance(parsed.get("module"), str)
            and isinstance(parsed.get("queue"), str)):
        return None
    at, by = parsed.get("published_at"), parsed.get("by")
    return StoredEntry(CatalogueEntry(module=parsed["module"], queue=parsed["queue"]),
                       float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None,
                       by if isinstance(by, str) else "", parsed.get("withdrawn") is True)


def read_catalogue(client: Redis, *, now: float | None = None) -> dict[str, CatalogueEntry]:
    """What the running APIs send now (Celery name -> entry), as ``taskgate doctor`` compares
    workers with: entries published within :data:`CATALOGUE_FRESH` of ``now`` (default: this
    clock's) and not withdrawn since; unreadable ones left out, and one that does not say when
    (written by an earlier version, which never republishes) counted as stale. (A worker naming
    the module of a task it lacks reads any entry: :func:`parse_entry`.)"""
    stored = cast(dict[bytes, bytes], client.hgetall(keys.CATALOGUE))
    since = (time.time() if now is None else now) - CATALOGUE_FRESH
    entries = {name.decode(): parse_stored(raw) for name, raw in stored.items()}
    return {name: read.entry for name, read in entries.items() if read is not None
            and read.published_at is not None and read.published_at >= since and not read.withdrawn}


def stale_names(stored: dict[bytes, bytes], now: float) -> list[bytes]:
    """The fields of the stored catalogue ``stored`` whose entries say they were published more
    than :data:`CATALOGUE_FRESH` before ``now``: those no running API republishes. Entries that
    do not say when (an earlier version's, whose API may still run) or do not parse are not."""
    since = now - CATALOGUE_FRESH
    return [name for name, raw in stored.items()
            if (read := parse_stored(raw)) is not None and read.published_at is not None
            and read.published_at < since]


def withdrawals(stored: dict[bytes, bytes], by: str) -> dict[bytes, bytes]:
    """The entries of the stored catalogue ``stored`` that ``by`` (not "") was the last to
    publish, as they read once it withdraws them: field -> stored form."""
    return {name: encode_entry(read.entry, read.published_at or 0.0, by, withdrawn=True)
            for name, raw in stored.items()
            if by and (read := parse_stored(raw)) is not None and read.by == by and not read.withdrawn}


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

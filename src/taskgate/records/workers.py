"""The workers as Redis knows them: their heartbeats (:data:`.keys.WORKER_PREFIX`) and the
API's catalogue (:data:`.keys.CATALOGUE`) that a worker's tasks are compared with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import orjson
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from . import keys

if TYPE_CHECKING:
    from ..registry import TaskSpec


def heartbeats(client: Redis) -> dict[str, dict[str, Any]]:
    """The live workers' heartbeats (see :data:`~taskgate.records.keys.WORKER_PREFIX`), by worker;
    one that does not parse reads as empty."""
    names = list(client.scan_iter(match=f"{keys.WORKER_PREFIX}*", count=1000))
    beats = cast(list[bytes | None], client.mget(names)) if names else []
    return {name.decode().removeprefix(keys.WORKER_PREFIX): parse_heartbeat(beat)
            for name, beat in zip(names, beats, strict=True) if beat}


def parse_heartbeat(beat: bytes) -> dict[str, Any]:
    """One heartbeat's JSON (empty when it does not parse)."""
    try:
        parsed = orjson.loads(beat)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def catalogue_entries(specs: Iterable[TaskSpec], default_queue: str) -> dict[str, dict[str, str]]:
    """An API's catalogue as workers and doctor compare it: Celery name -> {module, queue}."""
    return {spec.celery_name: {"module": spec.func.__module__, "queue": spec.queue or default_queue}
            for spec in specs}


def missing_tasks(beat: dict[str, Any], catalogue: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """The entries of ``catalogue`` (Celery name -> {module, queue}) that a worker consuming their
    queue lacks, judged from its heartbeat."""
    queues, tasks = set(beat.get("queues", [])), set(beat.get("tasks", []))
    return {name: entry for name, entry in sorted(catalogue.items())
            if entry.get("queue") in queues and name not in tasks}


async def async_heartbeats(redis: AsyncRedis) -> dict[str, dict[str, Any]]:
    """The live workers' heartbeats by worker (the asyncio twin of :func:`heartbeats`)."""
    names = [name async for name in redis.scan_iter(match=f"{keys.WORKER_PREFIX}*", count=1000)]
    beats = cast(list[bytes | None], await redis.mget(names)) if names else []
    return {name.decode().removeprefix(keys.WORKER_PREFIX): parse_heartbeat(beat)
            for name, beat in zip(names, beats, strict=True) if beat}

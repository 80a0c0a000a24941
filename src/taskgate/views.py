"""Views across many tasks: the history list and the queues with their workers."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson

from . import store
from .auth import Caller
from .constants import TASK_INDEX_KEY, WORKER_PREFIX, owner_index_key, task_record_key
from .jobs import SYSTEM, Gateway
from .recovery import catalogue_entries, missing_tasks
from .states import TaskState


async def history(gateway: Gateway, *, state: TaskState | None, name: str | None, limit: int,
                  before: float | None,
                  caller: Caller = SYSTEM) -> tuple[list[dict[str, Any]], float | None]:
    """Tasks newest first, filtered; returns a page and the cursor of the next one.

    Scans at most 20 index batches per call, so a rare filter returns a short page with a
    cursor to continue from rather than walking the whole index.
    """
    found: list[dict[str, Any]] = []
    upper = "+inf" if before is None else f"({before!r}"
    last: float | None = None
    async with gateway.deadline():
        for _ in range(20):
            index = TASK_INDEX_KEY if caller.admin else owner_index_key(caller.owner)
            batch = cast(list[tuple[bytes, float]], await gateway.state.zrevrangebyscore(
                index, upper, "-inf", start=0, num=limit, withscores=True))
            if not batch:
                return found, None
            pipe = gateway.state.pipeline(transaction=False)
            for member, _score in batch:
                pipe.hgetall(task_record_key(member.decode()))
            for (member, score), raw in zip(batch, await pipe.execute(), strict=True):
                last, upper = score, f"({score!r}"
                if not raw:
                    continue  # expired or forgotten; the index is trimmed lazily
                record = {"task_id": member.decode(), **store.decode_record(raw)}
                if state is not None and record["state"] != state.value:
                    continue
                if name is not None and record["name"] != name:
                    continue
                found.append(record)
                if len(found) == limit:
                    return found, score
    return found, last

async def queues(gateway: Gateway) -> list[dict[str, Any]]:
    """Every known queue (declared by tasks, the default, or consumed by a live worker) with
    its depth and the live workers consuming it."""
    async with gateway.deadline():
        keys = [key async for key in gateway.state.scan_iter(match=f"{WORKER_PREFIX}*", count=1000)]
        beats = await gateway.state.mget(keys) if keys else []
    default = gateway.settings.default_queue
    catalogue = catalogue_entries(gateway.catalogue.values(), default)
    consumers: dict[str, list[str]] = {}
    lacking: dict[str, dict[str, list[str]]] = {}
    for key, beat in zip(keys, beats, strict=True):
        if beat:
            worker = key.decode().removeprefix(WORKER_PREFIX)
            heartbeat = orjson.loads(beat)
            missing = missing_tasks(heartbeat, catalogue)
            for queue in heartbeat.get("queues", []):
                consumers.setdefault(queue, []).append(worker)
                names = [name.removeprefix("taskgate.") for name, entry in missing.items()
                         if entry["queue"] == queue]
                if names:
                    lacking.setdefault(queue, {})[worker] = names
    names = sorted({entry["queue"] for entry in catalogue.values()} | {default} | set(consumers))
    async with gateway.deadline("broker"):
        depths = await asyncio.gather(*(gateway.broker.depth(name) for name in names))
    return [{"name": name, "depth": depth, "workers": sorted(consumers.get(name, [])),
             "lacking": lacking.get(name, {})}
            for name, depth in zip(names, depths, strict=True)]

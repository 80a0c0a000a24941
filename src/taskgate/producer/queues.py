"""The queues with their depth and the live workers consuming them (``GET /queues``)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..brokers import Broker
from ..records.workers import async_heartbeats, catalogue_entries, missing_tasks
from ..registry import TaskSpec
from .backend import Backend


async def queues(backend: Backend, broker: Broker, catalogue: dict[str, TaskSpec]) -> list[dict[str, Any]]:
    """Every known queue (declared by tasks, the default, or consumed by a live worker) with
    its depth, the live workers consuming it and, per worker, the tasks of it that it lacks."""
    async with backend.deadline():
        beats = await async_heartbeats(backend.redis)
    default = backend.settings.default_queue
    entries = catalogue_entries(catalogue.values(), default)
    consumers: dict[str, list[str]] = {}
    lacking: dict[str, dict[str, list[str]]] = {}
    for worker, beat in beats.items():
        missing = missing_tasks(beat, entries)
        for queue in beat.queues:
            consumers.setdefault(queue, []).append(worker)
            names = [name.removeprefix("taskgate.") for name, entry in missing.items()
                     if entry["queue"] == queue]
            if names:
                lacking.setdefault(queue, {})[worker] = names
    names = sorted({entry["queue"] for entry in entries.values()} | {default} | set(consumers))
    async with backend.deadline("broker"):
        depths = await asyncio.gather(*(broker.depth(name) for name in names))
    return [{"name": name, "depth": depth, "workers": sorted(consumers.get(name, [])),
             "lacking": lacking.get(name, {})}
            for name, depth in zip(names, depths, strict=True)]

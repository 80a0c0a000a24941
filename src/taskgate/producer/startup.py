"""What an opening :class:`~taskgate.Taskgate` does with Redis, in the background so that
opening waits for nothing (a stalled Redis delays no app's startup): move records an earlier
version wrote to this key layout, and tell workers which module declares each task. Each step
is best effort, within TASKGATE_BACKEND_TIMEOUT (the layout's rare scan aside)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from .. import limits
from ..config import Settings
from ..exceptions import TaskGateError
from ..records import keys
from ..records.upgrade import upgrade_at
from ..records.workers import catalogue_entries
from .client import Producer

log = logging.getLogger("taskgate")


async def publish_catalogue(producer: Producer) -> None:
    """Tell workers which module declares each task (they name it when they lack one), and
    the scripts which limits it declares (``records/scripts/admission.lua``).
    Best effort: an API starting while Redis is down still starts, and serves 503s meanwhile."""
    entries = catalogue_entries(producer.catalogue.values(), producer.settings.default_queue)
    modules: dict[Any, Any] = {name: orjson.dumps(entry) for name, entry in entries.items()}
    try:
        async with producer.backend.deadline():
            pipe = producer.backend.redis.pipeline(transaction=False)
            if modules:  # an app serving none of its own tasks (built-in ones only) has none
                pipe.hset(keys.CATALOGUE, mapping=modules)
            limits.publish(pipe, list(producer.catalogue.values()))
            await pipe.execute()
    except TaskGateError as exc:
        log.warning("could not publish the task catalogue (%s); workers lacking a task will not "
                    "name its module", exc)


async def set_up(producer: Producer) -> None:
    """What an opening Taskgate does in the background: check the records' key layout, then
    publish the catalogue (each best effort, within the deadline)."""
    await upgrade_records(producer.settings)
    await publish_catalogue(producer)


async def upgrade_records(settings: Settings) -> None:
    """Move records an earlier version wrote to this key layout (once per Redis; see
    ``records.upgrade``). Best effort, like :func:`publish_catalogue`."""
    from redis.exceptions import RedisError

    try:
        await asyncio.to_thread(upgrade_at, settings.require_redis_url(), settings.backend_timeout)
    except RedisError as exc:
        log.warning("could not check the records' key layout (%s)", exc)

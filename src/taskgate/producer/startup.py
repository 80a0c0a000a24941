"""What an open :class:`~taskgate.Taskgate` does with Redis in the background, so that opening
waits for nothing (a stalled Redis delays no app's startup): move records an earlier version
wrote to this key layout, and tell workers which module declares each task (its catalogue in
:data:`~taskgate.records.keys.CATALOGUE`), again every ``CATALOGUE_REFRESH`` s while it is open,
withdrawn at close. Each step is best effort, within TASKGATE_BACKEND_TIMEOUT (the layout's
rare scan aside)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import Any, cast

from redis.exceptions import WatchError

from .. import constants, limits
from ..config import Settings
from ..exceptions import TaskGateError
from ..records import keys
from ..records.upgrade import upgrade_at
from ..records.workers import CATALOGUE_FRESH, catalogue_entries, encode_entry, stale_names, withdrawals
from .client import Producer

log = logging.getLogger("taskgate")


class Publication:
    """An open Taskgate's catalogue in Redis. Several APIs (replicas, a user's app beside the
    service) may share one Redis, each with its own catalogue: each writes its own entries,
    stamped with when and by whom (:attr:`by`), and none replaces the whole hash. ``taskgate
    doctor`` counts the entries published within ``records.workers.CATALOGUE_FRESH``: those of
    the running APIs, which republish theirs every ``constants.CATALOGUE_REFRESH`` seconds."""

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        #: This Taskgate's name in the entries it publishes: host, pid, and a random part.
        self.by = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"

    async def publish(self) -> None:
        """Tell workers which module declares each task (they name it when they lack one), and
        the scripts which limits it declares (``records/scripts/admission.lua``); at open and
        when a task is declared late. Best effort: an API starting while Redis is down still
        starts, and serves 503s meanwhile."""
        try:
            await self._write(declared_limits=True)
        except TaskGateError as exc:
            log.warning("could not publish the task catalogue (%s); workers lacking a task will not "
                        "name its module", exc)

    async def refresh(self) -> None:
        """Publish the catalogue again every ``constants.CATALOGUE_REFRESH`` seconds, for as long
        as the Taskgate is open (a lifespan task, cancelled at close). Best effort: Redis being
        down is logged once per outage, and the next round tries again."""
        failing = False
        while True:
            await asyncio.sleep(constants.CATALOGUE_REFRESH)
            try:
                await self._write(declared_limits=False)
            except TaskGateError as exc:
                if not failing:
                    log.warning("could not refresh the task catalogue (%s); trying again every %g s",
                                exc, constants.CATALOGUE_REFRESH)
                failing = True
            else:
                failing = False

    async def withdraw(self) -> None:
        """At close: mark withdrawn the entries this Taskgate was the last to publish, so that
        doctor stops counting at once the tasks no running API sends, without waiting for them
        to go stale (another API serving one publishes it again within ``CATALOGUE_REFRESH`` s;
        workers still read the module it names until it is deleted as stale). In one
        transaction, given up if an API publishes meanwhile (those entries then go stale). Best
        effort: Redis being down leaves them to go stale."""
        redis = self.producer.backend.redis
        try:
            async with self.producer.backend.deadline(), redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(keys.CATALOGUE)
                    mine: dict[Any, Any] = withdrawals(
                        cast(dict[bytes, bytes], await pipe.hgetall(keys.CATALOGUE)), self.by)
                    if mine:
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.hset(keys.CATALOGUE, mapping=mine)
                        await pipe.execute()
                except WatchError:
                    return
        except TaskGateError as exc:
            log.info("could not withdraw the task catalogue (%s); its entries go stale in %g s",
                     exc, CATALOGUE_FRESH)

    async def _write(self, *, declared_limits: bool) -> None:
        """Write this Taskgate's entries, stamped now, and its declared limits if
        ``declared_limits``; then delete the entries no running API republished within
        ``CATALOGUE_FRESH``. ``BackendUnavailable`` when Redis fails or is late."""
        producer, now = self.producer, time.time()
        entries = catalogue_entries(producer.catalogue.values(), producer.settings.default_queue)
        modules: dict[Any, Any] = {name: encode_entry(entry, now, self.by) for name, entry in entries.items()}
        async with producer.backend.deadline():
            redis = producer.backend.redis
            pipe = redis.pipeline(transaction=False)
            if modules:  # an app serving none of its own tasks (built-in ones only) has none
                pipe.hset(keys.CATALOGUE, mapping=modules)
            if declared_limits:
                limits.publish(pipe, list(producer.catalogue.values()))
            pipe.hgetall(keys.CATALOGUE)
            stored = cast(dict[bytes, bytes], (await pipe.execute())[-1])
            # An API back from a longer outage may republish one of these between the read and
            # the delete: its entry is then missing until its next round (doctor misses it then).
            stale = stale_names(stored, now)
            if stale:
                await redis.hdel(keys.CATALOGUE, *stale)


async def set_up(publication: Publication) -> None:
    """What an opening Taskgate does in the background: check the records' key layout, then
    publish the catalogue (each best effort, within the deadline; :meth:`Publication.refresh`
    publishes it again while the Taskgate is open)."""
    await upgrade_records(publication.producer.settings)
    await publication.publish()


async def upgrade_records(settings: Settings) -> None:
    """Move records an earlier version wrote to this key layout (once per Redis; see
    ``records.upgrade``). Best effort, like :meth:`Publication.publish`."""
    from redis.exceptions import RedisError

    try:
        await asyncio.to_thread(upgrade_at, settings.require_redis_url(), settings.backend_timeout)
    except RedisError as exc:
        log.warning("could not check the records' key layout (%s)", exc)

"""The live feed of task changes behind ``GET /events`` (the dashboard's task list): one
pattern subscription to every task's events channel per API process, held only while a feed
is open, fanned out to each open feed with its owner's visibility and its filter. A process
holds at most TASKGATE_MAX_STREAMS feeds, an owner its share of them.

A feed never floods its reader: changes are coalesced per task (the latest record wins) and
handed over at most every :data:`FLUSH_INTERVAL` seconds, at most :data:`BATCH_LIMIT` tasks
at a time (the most recently changed ones; a client that needs all of them reads the history),
and a feed whose reader does not keep up holds no more than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..auth import Caller
from ..exceptions import BackendUnavailable, QuotaExceeded
from ..records import TaskRecord, keys
from ..records.model import decode_event
from ..states import TaskState

log = logging.getLogger("taskgate.feed")

#: Seconds between two batches of one feed, at least.
FLUSH_INTERVAL = 0.25
#: Tasks in one batch, at most.
BATCH_LIMIT = 500
#: Seconds of silence after which a feed yields an empty batch (a keep-alive).
KEEPALIVE = 15.0


@dataclass(eq=False)
class _Reader:
    caller: Caller
    state: TaskState | None
    name: str | None
    pending: dict[str, TaskRecord] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    broken: bool = False

    def offer(self, record: TaskRecord) -> None:
        if not self.caller.may_see(record.owner):
            return
        if (self.state is not None and record.state != self.state) or (
                self.name is not None and record.name != self.name):
            return
        self.pending.pop(record.task_id, None)  # re-inserted last: the most recent change
        self.pending[record.task_id] = record
        if len(self.pending) > BATCH_LIMIT:  # a reader that does not keep up costs no more
            del self.pending[next(iter(self.pending))]
        self.wake.set()


class Feed:
    """Every open feed of one API process, over one pattern subscription."""

    def __init__(self, client: Redis, limit: int, per_owner: int) -> None:
        self.client, self.limit, self.per_owner = client, limit, per_owner
        self.readers: set[_Reader] = set()
        self._task: asyncio.Task[None] | None = None
        #: Set while the pattern subscription is confirmed.
        self.live = asyncio.Event()

    async def _pump(self, live: asyncio.Event) -> None:
        """Read every task's changes while feeds are open (the last one to end stops it), or
        until Redis's events are lost: then the open feeds end, and the next feed starts again."""
        pubsub = self.client.pubsub()
        try:
            await pubsub.psubscribe(keys.EVENTS_PREFIX + "*")
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "psubscribe":
                    live.set()  # Redis confirmed: from now on no change is missed
                if message is None or message.get("type") != "pmessage":
                    continue
                channel = message["channel"]
                task_id = keys.task_of_channel(channel.decode() if isinstance(channel, bytes) else channel)
                try:
                    record = decode_event(task_id, message["data"])
                except (ValueError, TypeError, AttributeError):  # not a record's JSON object
                    continue
                for reader in list(self.readers):
                    reader.offer(record)
        except (RedisError, OSError) as exc:
            log.warning("task feed: lost Redis's events (%s); open feeds end", exc)
            for reader in list(self.readers):
                reader.broken = True
                reader.wake.set()
        finally:
            live.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def stream(self, caller: Caller, state: TaskState | None = None,
                     name: str | None = None) -> AsyncIterator[list[TaskRecord]]:
        """Batches of changed tasks the caller may see, as they change: first an empty batch once
        the subscription is live, then the changes, and an empty batch after :data:`KEEPALIVE`
        quiet seconds. Ends (``BackendUnavailable``) if Redis's events are lost."""
        self.check(caller)
        reader = _Reader(caller, state, name)
        self.readers.add(reader)
        if self._task is None or self._task.done():
            self.live = asyncio.Event()  # this pump's: a stopping one cannot clear it
            self._task = asyncio.create_task(self._pump(self.live))
        live = self.live
        last = 0.0
        try:
            try:
                async with asyncio.timeout(KEEPALIVE):
                    await live.wait()
            except TimeoutError:
                raise BackendUnavailable("redis", "the API could not subscribe to Redis's events") from None
            yield []  # live: every change from now on is in a later batch
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KEEPALIVE):
                        await reader.wake.wait()
                if reader.broken:
                    raise BackendUnavailable("redis", "the API lost Redis's events; reconnect")
                pause = last + FLUSH_INTERVAL - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)  # throttle: changes meanwhile join this batch
                reader.wake.clear()
                batch = list(reader.pending.values())[-BATCH_LIMIT:]
                reader.pending.clear()
                last = time.monotonic()
                yield batch
        finally:
            self.readers.discard(reader)
            if not self.readers and self._task is not None:  # nobody listens: stop listening
                self._task.cancel()
                self._task = None

    def check(self, caller: Caller) -> None:
        """``QuotaExceeded`` when the caller's owner holds its share of this process's feeds,
        ``BackendUnavailable`` when the process holds all it may."""
        if sum(reader.caller.owner == caller.owner for reader in self.readers) >= self.per_owner:
            raise QuotaExceeded(f"{caller.owner} holds {self.per_owner} live feeds on this API process, its "
                                "share (TASKGATE_MAX_STREAMS_PER_OWNER); close one", retry_after=1)
        if len(self.readers) >= self.limit:
            raise BackendUnavailable("api", f"this API process holds {self.limit} live feeds, the most "
                                     "it may (TASKGATE_MAX_STREAMS); retry later")

    async def close(self) -> None:
        """Stop reading and close the subscription's client."""
        self.readers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.client.aclose()

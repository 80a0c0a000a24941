"""The live feed of task changes behind ``GET /events`` (the dashboard's task list): one
pattern subscription to every task's events channel per API process, held only while a feed
is open. Each change is decoded once and appended once to a log the process's open feeds share;
each feed reads the log from where it left off, with its owner's visibility and its filter, and
hands over :class:`FeedEntry` objects, whose JSON is rendered once for every feed that shows them.
A process holds at most TASKGATE_MAX_STREAMS feeds, an owner its share of them.

A feed never floods its reader: changes are coalesced per task (the latest record wins) and
handed over at most every :data:`FLUSH_INTERVAL` seconds, at most :data:`BATCH_LIMIT` tasks
at a time (the most recently changed ones; a client that needs all of them reads the history).
The log keeps the last :data:`LOG_LIMIT` changes: a feed whose reader falls further behind gets
the most recent of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from itertools import islice

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
#: Changes the process keeps for feeds that have not read them yet, at most.
LOG_LIMIT = 5 * BATCH_LIMIT
#: Seconds of silence after which a feed yields an empty batch (a keep-alive).
KEEPALIVE = 15.0


class FeedEntry:
    """One task's change as every feed of the process shares it: the record, and its rendering
    (``GET /events`` renders it as JSON), made on the first feed's request and kept for the others."""

    __slots__ = ("record", "_rendered")

    def __init__(self, record: TaskRecord) -> None:
        self.record = record
        self._rendered: tuple[Callable[[TaskRecord], str], str] | None = None

    def render(self, render: Callable[[TaskRecord], str]) -> str:
        """``render(self.record)``, computed once per ``render`` function."""
        if self._rendered is None or self._rendered[0] is not render:
            self._rendered = (render, render(self.record))
        return self._rendered[1]


@dataclass(eq=False)
class _Reader:
    caller: Caller
    state: TaskState | None
    name: str | None
    cursor: int  # the number of the first change of the log this feed has not read
    broken: bool = False


class Feed:
    """Every open feed of one API process, over one pattern subscription."""

    def __init__(self, client: Redis, limit: int, per_owner: int) -> None:
        self.client, self.limit, self.per_owner = client, limit, per_owner
        self.readers: set[_Reader] = set()
        self._task: asyncio.Task[None] | None = None
        #: Set while the pattern subscription is confirmed.
        self.live = asyncio.Event()
        #: The last changes, oldest first; ``_end`` numbers the next one.
        self._log: deque[FeedEntry] = deque(maxlen=LOG_LIMIT)
        self._end = 0
        #: Set at the next change (replaced once set, by the next feed that waits).
        self._changed = asyncio.Event()

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
                self._log.append(FeedEntry(record))
                self._end += 1
                self._changed.set()
        except (RedisError, OSError) as exc:
            log.warning("task feed: lost Redis's events (%s); open feeds end", exc)
            for reader in list(self.readers):
                reader.broken = True
            self._changed.set()
        finally:
            live.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    def _read(self, reader: _Reader) -> list[FeedEntry]:
        """The changes of the log ``reader`` has not read that it may see and its filter keeps,
        the latest per task, oldest first: at most :data:`BATCH_LIMIT` (the most recent)."""
        fresh, reader.cursor = self._end - reader.cursor, self._end
        everyone, owner, state, name = reader.caller.admin, reader.caller.owner, reader.state, reader.name
        latest: dict[str, FeedEntry] = {}
        for change in islice(reversed(self._log), fresh):  # newest first
            record = change.record
            if (record.task_id in latest or (not everyone and record.owner != owner)
                    or (state is not None and record.state != state)
                    or (name is not None and record.name != name)):
                continue
            latest[record.task_id] = change
            if len(latest) == BATCH_LIMIT:
                break
        return list(reversed(latest.values()))

    def _next_change(self) -> asyncio.Event:
        """An event set at the next change."""
        if self._changed.is_set():  # whoever waited on it is already woken
            self._changed = asyncio.Event()
        return self._changed

    async def stream(self, caller: Caller, state: TaskState | None = None,
                     name: str | None = None) -> AsyncIterator[list[FeedEntry]]:
        """Batches of changed tasks the caller may see, as they change: first an empty batch once
        the subscription is live, then the changes, and an empty batch after :data:`KEEPALIVE`
        quiet seconds. Ends (``BackendUnavailable``) if Redis's events are lost."""
        self.check(caller)
        reader = _Reader(caller, state, name, cursor=self._end)
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
            said = time.monotonic()
            while True:
                if reader.cursor == self._end and not reader.broken:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, said + KEEPALIVE - time.monotonic())):
                            await self._next_change().wait()
                if reader.broken:
                    raise BackendUnavailable("redis", "the API lost Redis's events; reconnect")
                pause = last + FLUSH_INTERVAL - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)  # throttle: changes meanwhile join this batch
                batch = self._read(reader)
                last = time.monotonic()
                if batch or last >= said + KEEPALIVE:  # changes this feed does not show wake it, in vain
                    said = last
                    yield batch
        finally:
            self.readers.discard(reader)
            if not self.readers and self._task is not None:  # nobody listens: stop listening
                self._task.cancel()
                self._task = None
                self._log.clear()

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

"""The live feed of task changes behind ``GET /events`` (the dashboard's task list): one
pattern subscription to every task's events channel per API process, held only while a feed
is open. Each change is decoded once and appended once to a log the process's open feeds share.
One clock per process flushes every feed waiting for its next batch at once: feeds that read the
same changes with the same view (the owner they may see, or every owner, and their filter) get
one batch, encoded once by the feed's ``encode`` (``GET /events``: its SSE frame) and shared, so
a feed's own cost per batch is one write. A process holds at most TASKGATE_MAX_STREAMS feeds, an
owner its share of them.

A feed never floods its reader: changes are coalesced per task (the latest record wins) and
handed over at most every :data:`FLUSH_INTERVAL` seconds, at most :data:`BATCH_LIMIT` tasks
at a time (the most recently changed ones; a client that needs all of them reads the history).
A feed still writing its last batch when the clock flushes reads from where it left off at the
next flush. The log keeps the last :data:`LOG_LIMIT` changes: a feed whose reader falls further
behind gets the most recent of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Hashable
from dataclasses import dataclass, field
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
#: Why open feeds end when the subscription is lost.
LOST = "the API lost Redis's events; reconnect"


class FeedEntry:
    """One task's change as every feed of the process shares it: the record, and its rendering
    (``GET /events`` renders it as JSON), made on the first feed's request and kept for the others."""

    __slots__ = ("record", "_rendered")

    def __init__(self, record: TaskRecord) -> None:
        self.record = record
        self._rendered: tuple[Callable[[TaskRecord], bytes], bytes] | None = None

    def render(self, render: Callable[[TaskRecord], bytes]) -> bytes:
        """``render(self.record)``, computed once per ``render`` function."""
        if self._rendered is None or self._rendered[0] is not render:
            self._rendered = (render, render(self.record))
        return self._rendered[1]


#: What a feed's reader makes of a batch (the bytes it writes), made once per flush for every
#: feed with the same view and the same ``encode``.
Encode = Callable[[list[FeedEntry]], bytes]


@dataclass(eq=False)
class _Reader:
    caller: Caller
    state: TaskState | None
    name: str | None
    encode: Encode
    cursor: int  # the number of the first change of the log this feed has not read
    broken: bool = False
    #: Set while the feed waits for its next batch: the clock answers it with the batch's
    #: bytes, the keep-alive timer with None, a lost subscription with BackendUnavailable.
    waiting: asyncio.Future[bytes | None] | None = field(default=None, repr=False)

    def view(self) -> Hashable:
        """Feeds with equal views are given the same bytes at a flush."""
        owner = None if self.caller.admin else self.caller.owner
        return owner, self.state, self.name, self.encode, self.cursor


def _keepalive(waiting: asyncio.Future[bytes | None]) -> None:
    if not waiting.done():
        waiting.set_result(None)


class Feed:
    """Every open feed of one API process, over one pattern subscription and one clock."""

    def __init__(self, client: Redis, limit: int, per_owner: int) -> None:
        self.client, self.limit, self.per_owner = client, limit, per_owner
        self.readers: set[_Reader] = set()
        self._task: asyncio.Task[None] | None = None
        self._clock: asyncio.Task[None] | None = None
        #: Set while the pattern subscription is confirmed.
        self.live = asyncio.Event()
        #: The last changes, oldest first; ``_end`` numbers the next one.
        self._log: deque[FeedEntry] = deque(maxlen=LOG_LIMIT)
        self._end = 0
        #: Set when a waiting feed has changes to read (a change came, or a feed that was
        #: writing waits again behind the log): the clock flushes at its next tick.
        self._due = asyncio.Event()

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
                self._due.set()
        except (RedisError, OSError) as exc:
            log.warning("task feed: lost Redis's events (%s); open feeds end", exc)
            for reader in list(self.readers):
                reader.broken = True
                if reader.waiting is not None and not reader.waiting.done():
                    reader.waiting.set_exception(BackendUnavailable("redis", LOST))
        finally:
            live.clear()
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    async def _tick(self) -> None:
        """The process's clock: at most every :data:`FLUSH_INTERVAL` seconds, once changes wait."""
        flushed = 0.0
        while True:
            await self._due.wait()
            pause = flushed + FLUSH_INTERVAL - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)  # throttle: changes meanwhile join this flush
            self._due.clear()
            flushed = time.monotonic()
            self._flush()

    def _flush(self) -> None:
        """Hand each waiting feed what it has not read, if it shows any of it: one batch and one
        ``encode`` per view. A feed still writing keeps its cursor for the next flush."""
        frames: dict[Hashable, bytes | Exception | None] = {}
        for reader in self.readers:
            waiting = reader.waiting
            if waiting is None or waiting.done() or reader.cursor == self._end:
                continue
            view = reader.view()
            if view not in frames:
                batch = self._read(reader)
                try:
                    frames[view] = reader.encode(batch) if batch else None  # nothing it shows: no batch
                except Exception as exc:  # ends these feeds (their response fails), not the clock
                    frames[view] = exc
            reader.cursor = self._end
            frame = frames[view]
            if isinstance(frame, Exception):
                waiting.set_exception(frame)
            elif frame is not None:
                waiting.set_result(frame)

    def _read(self, reader: _Reader) -> list[FeedEntry]:
        """The changes of the log ``reader`` has not read that it may see and its filter keeps,
        the latest per task, oldest first: at most :data:`BATCH_LIMIT` (the most recent)."""
        everyone, owner, state, name = reader.caller.admin, reader.caller.owner, reader.state, reader.name
        latest: dict[str, FeedEntry] = {}
        for change in islice(reversed(self._log), self._end - reader.cursor):  # newest first
            record = change.record
            if (record.task_id in latest or (not everyone and record.owner != owner)
                    or (state is not None and record.state != state)
                    or (name is not None and record.name != name)):
                continue
            latest[record.task_id] = change
            if len(latest) == BATCH_LIMIT:
                break
        return list(reversed(latest.values()))

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self.live = asyncio.Event()  # this pump's: a stopping one cannot clear it
            self._task = asyncio.create_task(self._pump(self.live))
        if self._clock is None or self._clock.done():
            self._clock = asyncio.create_task(self._tick())

    def _stop(self) -> None:
        for task in (self._task, self._clock):
            if task is not None:
                task.cancel()
        self._task = self._clock = None
        self._log.clear()

    async def stream(self, caller: Caller, encode: Encode, state: TaskState | None = None,
                     name: str | None = None) -> AsyncGenerator[bytes]:
        """Batches of changed tasks the caller may see, as they change, each as ``encode`` makes
        it: first an empty batch once the subscription is live, then the changes, and an empty
        batch after :data:`KEEPALIVE` quiet seconds. Ends (``BackendUnavailable``) if Redis's
        events are lost. ``encode`` is called once per flush for every feed with the same view,
        so it must depend on the batch only (a function defined once, not a new closure per feed)."""
        self.check(caller)
        reader = _Reader(caller, state, name, encode, cursor=self._end)
        self.readers.add(reader)
        self._start()
        live, loop = self.live, asyncio.get_running_loop()
        try:
            try:
                async with asyncio.timeout(KEEPALIVE):
                    await live.wait()
            except TimeoutError:
                raise BackendUnavailable("redis", "the API could not subscribe to Redis's events") from None
            yield encode([])  # live: every change from now on is in a later batch
            said = loop.time()
            while True:
                if reader.broken:
                    raise BackendUnavailable("redis", LOST)
                reader.waiting = waiting = loop.create_future()
                if reader.cursor != self._end:
                    self._due.set()  # it was writing at a flush: the next one reads for it
                timer = loop.call_at(said + KEEPALIVE, _keepalive, waiting)
                try:
                    frame = await waiting
                finally:
                    timer.cancel()
                    reader.waiting = None
                said = loop.time()
                yield encode([]) if frame is None else frame
        finally:
            self.readers.discard(reader)
            if not self.readers:  # nobody listens: stop listening
                self._stop()

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
        tasks = [task for task in (self._task, self._clock) if task is not None]
        self._stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.client.aclose()

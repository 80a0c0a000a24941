"""Waits and streams share one pub/sub connection per API process.

A ``PubSub`` per ``?wait=``, SSE stream or waiting ``POST /tasks/results`` held one Redis
connection each: once the client's pool (100) was taken, every further wait of every owner
failed at once. Here :class:`Subscriptions` keeps one dedicated connection (redis-py's
``PubSub``) subscribed to the union of the waiters' channels. A reader task hands each message
to the :class:`Subscription` of every waiter on its channel; a channel is ``SUBSCRIBE``\\ d when
its first waiter comes and ``UNSUBSCRIBE``\\ d when its last one leaves, and a waiter enters
only once Redis has confirmed its channels, so a record read afterwards misses no change.

If the connection breaks, or answers no ping for :data:`KEEPALIVE` seconds, every waiter on it
gets ``BackendUnavailable`` (never a silent gap: redis-py's own reconnect and resubscribe is
off) and the next waiter opens a new connection. :class:`Limits` bounds the waiters per process
and per owner (``TASKGATE_MAX_STREAMS``, ``TASKGATE_MAX_STREAMS_PER_OWNER``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable

from redis.asyncio import Redis

from ..connections import EVENTS_CLIENT_NAME
from ..constants import ANONYMOUS
from ..exceptions import BackendUnavailable, QuotaExceeded
from .deadlines import unavailable
from .timeout import within

#: Seconds of silence on the connection before a ping, and after an unanswered ping before it
#: counts as broken.
KEEPALIVE = 5.0
#: Messages one waiter may leave unread before it is cut off (it cannot keep up; the reader
#: never blocks on a waiter, or Redis would drop the connection of all of them).
BACKLOG = 10_000
#: What ``CLIENT LIST`` calls the connection (made by :func:`taskgate.connections.events`).
CLIENT_NAME = EVENTS_CLIENT_NAME


class Limits:
    """Waiters per API process and per owner. The anonymous owner (auth off: every caller is
    one) has no share of its own, only the total."""

    def __init__(self, total: int, per_owner: int) -> None:
        self.total, self.per_owner = total, per_owner
        self.held: Counter[str] = Counter()
        self.count = 0

    def acquire(self, owner: str) -> None:
        """Count one more waiter of ``owner``, or refuse: 429 over its share, 503 when full."""
        if owner != ANONYMOUS and self.held[owner] >= self.per_owner:
            raise QuotaExceeded(f"{owner} has {self.held[owner]} waits and event streams open on this "
                                f"API process, the most one owner may (TASKGATE_MAX_STREAMS_PER_OWNER); "
                                "end one or retry later", retry_after=1)
        if self.count >= self.total:
            raise BackendUnavailable("api", f"this API process serves {self.count} waits and event "
                                     "streams, its limit (TASKGATE_MAX_STREAMS)")
        self.held[owner] += 1
        self.count += 1

    def release(self, owner: str) -> None:
        self.held[owner] -= 1
        if not self.held[owner]:
            del self.held[owner]
        self.count -= 1


class Subscription:
    """One waiter's channels: ``await get(timeout)`` returns ``(channel, data)`` of each message
    published on them after the subscription was confirmed, in order."""

    def __init__(self, channels: Iterable[str]) -> None:
        self.channels = tuple(dict.fromkeys(channels))
        self._messages: deque[tuple[str, bytes]] = deque()
        self._arrived = asyncio.Event()
        self.error: BackendUnavailable | None = None

    async def get(self, timeout: float) -> tuple[str, bytes] | None:  # noqa: ASYNC109
        """The next message, None if none came within ``timeout`` seconds; ``BackendUnavailable``
        once the connection broke (after the messages that came before)."""
        if not self._messages and self.error is None:
            self._arrived.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._arrived.wait()
            except TimeoutError:
                return None
        if self._messages:
            return self._messages.popleft()
        assert self.error is not None
        raise self.error

    def _deliver(self, channel: str, data: bytes) -> None:
        if len(self._messages) >= BACKLOG:
            self._fail(BackendUnavailable("redis", f"{BACKLOG} events were left unread"))
            return
        self._messages.append((channel, data))
        self._arrived.set()

    def _fail(self, error: BackendUnavailable) -> None:
        if self.error is None:
            self.error = error
            self._arrived.set()


class _Link:
    """One pub/sub connection, the waiters on it, and its writer and reader tasks."""

    def __init__(self, client: Redis, timeout: float) -> None:
        self.pubsub = client.pubsub()
        self.timeout = timeout
        self.waiters: dict[str, set[Subscription]] = {}
        #: Per channel, the confirmation of its current subscription.
        self.confirmed: dict[str, asyncio.Future[None]] = {}
        #: Per channel, confirmations sent for and not yet answered, oldest first.
        self.unanswered: dict[str, deque[asyncio.Future[None]]] = {}
        #: Commands not yet sent, in order: ("SUBSCRIBE" | "UNSUBSCRIBE" | "PING", channel).
        self.outbox: list[tuple[str, str]] = []
        self.wake = asyncio.Event()
        self.error: BackendUnavailable | None = None
        self.writer = asyncio.create_task(self._write(), name="taskgate-events-writer")
        self.reader: asyncio.Task[None] | None = None
        self.closed: asyncio.Task[None] | None = None

    async def join(self, subscription: Subscription) -> None:
        """Add ``subscription``'s channels; return once Redis confirmed all of them."""
        loop = asyncio.get_running_loop()
        for channel in subscription.channels:
            waiting = self.waiters.setdefault(channel, set())
            if not waiting:
                future = self.confirmed[channel] = loop.create_future()
                self.unanswered.setdefault(channel, deque()).append(future)
                self.outbox.append(("SUBSCRIBE", channel))
            waiting.add(subscription)
        self.wake.set()
        pending = {self.confirmed[channel] for channel in subscription.channels}
        pending = {future for future in pending if not future.done()}
        try:
            async with within(self.timeout):
                if pending:  # asyncio.wait, not gather: a cancelled waiter must leave shared futures be
                    await asyncio.wait(pending)
        except TimeoutError:
            raise BackendUnavailable("redis", f"no answer within {self.timeout:g}s") from None
        if self.error is not None:
            raise self.error

    def leave(self, subscription: Subscription) -> None:
        """Drop ``subscription``; unsubscribe the channels it was the last waiter of."""
        if self.error is not None:
            return
        for channel in subscription.channels:
            waiting = self.waiters.get(channel)
            if waiting is None:
                continue
            waiting.discard(subscription)
            if not waiting:
                del self.waiters[channel], self.confirmed[channel]
                self.outbox.append(("UNSUBSCRIBE", channel))
        self.wake.set()

    # Both loops also stop on ``self.error``, not only on cancellation: redis-py sends under
    # ``asyncio.wait_for``, which on Python 3.11 may swallow a cancellation that lands as the
    # send completes.
    async def _write(self) -> None:
        try:
            while self.error is None:
                await self.wake.wait()
                self.wake.clear()
                sending, self.outbox = self.outbox, []
                for command, channels in _runs(sending):
                    if self.error is not None:
                        return
                    if command == "SUBSCRIBE":
                        await self.pubsub.subscribe(*channels)
                    elif command == "UNSUBSCRIBE":
                        await self.pubsub.unsubscribe(*channels)
                    else:
                        await self.pubsub.ping()
                if self.reader is None and self.pubsub.connection is not None:
                    self.reader = asyncio.create_task(self._read(), name="taskgate-events-reader")
        except Exception as exc:
            self.fail(exc)

    async def _read(self) -> None:
        pinged = False
        try:
            while self.error is None:
                message = await self.pubsub.get_message(timeout=KEEPALIVE)
                if message is None:
                    if pinged:
                        raise ConnectionError(f"the events connection answered no ping within {KEEPALIVE:g}s")
                    pinged = True
                    self.outbox.append(("PING", ""))
                    self.wake.set()
                    continue
                pinged = False
                kind, channel = message["type"], message["channel"]
                if kind == "message":
                    name = channel.decode()
                    for subscription in self.waiters.get(name, ()):
                        subscription._deliver(name, message["data"])
                    await asyncio.sleep(0)  # let the waiters run between messages
                elif kind == "subscribe":
                    name = channel.decode()
                    answered = self.unanswered.get(name)
                    if answered:
                        answered.popleft().set_result(None)
                        if not answered:
                            del self.unanswered[name]
        except Exception as exc:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        """The connection is lost: every waiter on it gets ``BackendUnavailable``, and it closes."""
        if self.error is not None:
            return
        self.error = unavailable("redis", exc, self.timeout)
        for waiting in self.waiters.values():
            for subscription in waiting:
                subscription._fail(self.error)
        for futures in self.unanswered.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)  # join() raises self.error
        self.closed = asyncio.get_running_loop().create_task(self._shut())

    async def _shut(self) -> None:
        tasks = {task for task in (self.writer, self.reader) if task is not None}
        for task in tasks:
            task.cancel()
        self.wake.set()
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # a read in progress fails
        await asyncio.wait(tasks)

    async def close(self) -> None:
        self.fail(ConnectionError("the API is shutting down"))
        assert self.closed is not None
        await self.closed


def _runs(commands: list[tuple[str, str]]) -> Iterable[tuple[str, list[str]]]:
    """Consecutive commands of one kind as one command with many channels, in order."""
    run: list[str] = []
    kind = ""
    for command, channel in commands:
        if command != kind and run:
            yield kind, run
            run = []
        kind = command
        run.append(channel)
    if run:
        yield kind, run


class Subscriptions:
    """``async with subscriptions(*channels, owner=...) as subscription``: subscribed (confirmed
    by Redis) to ``channels`` inside the block, counted against ``limits``."""

    def __init__(self, client: Redis, timeout: float = 1.0, limits: Limits | None = None) -> None:
        self.client = client
        self.timeout = timeout
        self.limits = limits or Limits(total=sys.maxsize, per_owner=sys.maxsize)
        self._link: _Link | None = None
        self._broken: list[_Link] = []

    @contextlib.asynccontextmanager
    async def __call__(self, *channels: str, owner: str = ANONYMOUS) -> AsyncIterator[Subscription]:
        self.limits.acquire(owner)
        try:
            link = self._current()
            subscription = Subscription(channels)
            try:
                await link.join(subscription)
                yield subscription
            finally:
                link.leave(subscription)
        finally:
            self.limits.release(owner)

    def _current(self) -> _Link:
        """The working connection; a new one if the last broke."""
        self._broken = [link for link in self._broken if link.closed is None or not link.closed.done()]
        if self._link is not None and self._link.error is not None:
            self._broken.append(self._link)
            self._link = None
        if self._link is None:
            self._link = _Link(self.client, self.timeout)
        return self._link

    @property
    def channels(self) -> int:
        """Channels the connection is subscribed to (or subscribing to)."""
        return len(self._link.waiters) if self._link is not None and self._link.error is None else 0

    async def close(self) -> None:
        """Close the connection and the client; waiters still on it get ``BackendUnavailable``."""
        links = [*self._broken, *([self._link] if self._link is not None else [])]
        self._link, self._broken = None, []
        for link in links:
            await link.close()
        await self.client.aclose()

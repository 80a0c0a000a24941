"""A deadline on Redis, not on this process's backlog.

``asyncio.timeout`` counts wall time, so it also counts the time this process's event loop was
too busy to read an answer: a burst of 2,000 requests keeps one loop busy for seconds, and a
healthy Redis, answering each call in a millisecond, was reported as down (503) to most of them.
:func:`within` gives back what the loop ran late while the block waited:

* a ticker measures how late the loop wakes (:class:`LagClock`, running only while some
  deadline is pending); the time it ran late during the block is added to the block's
  deadline, up to :data:`MAX_LAG_FACTOR` times the deadline itself (never a hang);
* once due, the block still gets :data:`GRACE_TURNS` turns of the loop, in which an answer that
  reached the socket in time is read, parsed and handed to its caller.

On an idle loop (Redis frozen, or the network holding the answer) nothing is added and the
turns take microseconds: the block ends at its deadline.
"""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType

#: Event-loop turns from an answer reaching the socket to its caller running again: the loop
#: sees the socket readable, the connection's reader parses the answer and resolves the caller's
#: future, the caller resumes (one more for a round trip that had not started its read yet).
GRACE_TURNS = 4
#: A deadline is extended by at most this many times itself for the loop's lateness.
MAX_LAG_FACTOR = 4.0


class LagClock:
    """Seconds one event loop has woken late, summed, while anyone is counting: a timer every
    :attr:`TICK` seconds adds how late it fired, past :attr:`NOISE` (an idle loop's timers wake
    up to a millisecond late: the poll's timeout is in whole milliseconds)."""

    TICK = 0.01
    NOISE = 0.002

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the clock is its loop's value in ``_clocks``, which would keep the loop alive.
        self._loop = weakref.ref(loop)
        self.total = 0.0
        self.users = 0
        self._next: float | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop()
        assert loop is not None, "used only from its own loop, which is alive then"
        return loop

    def start(self) -> float:
        """Count lateness until :meth:`stop`; the total so far."""
        self.users += 1
        if self._next is None:
            self._next = self.loop.time() + self.TICK
            self.loop.call_at(self._next, self._tick)
        return self.total

    def stop(self) -> None:
        self.users -= 1

    def _tick(self) -> None:
        assert self._next is not None
        now = self.loop.time()
        self.total += max(0.0, now - self._next - self.NOISE)
        if self.users > 0:
            self._next = now + self.TICK
            self.loop.call_at(self._next, self._tick)
        else:
            self._next = None


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LagClock] = weakref.WeakKeyDictionary()


def lag_clock(loop: asyncio.AbstractEventLoop) -> LagClock:
    """The :class:`LagClock` of ``loop``."""
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = LagClock(loop)
    return clock


class within:  # noqa: N801 - used like asyncio.timeout
    """``async with within(seconds):``: ``asyncio.timeout(seconds)`` that does not count this
    process's lateness (see the module's docstring); raises ``TimeoutError``."""

    __slots__ = ("seconds", "_timeout", "_handle", "_turns", "_clock", "_lag0", "_given")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        self._timeout = asyncio.timeout(None)
        await self._timeout.__aenter__()
        self._turns = 0
        self._given = 0.0
        self._clock = lag_clock(loop)
        self._lag0 = self._clock.start()
        self._handle: asyncio.Handle = loop.call_at(loop.time() + self.seconds, self._due)

    def _due(self) -> None:
        loop = self._clock.loop
        late = min(self._clock.total - self._lag0, self.seconds * MAX_LAG_FACTOR) - self._given
        if late > 0.001:  # the loop ran late meanwhile: that time is given back
            self._given += late
            self._handle = loop.call_at(loop.time() + late, self._due)
        elif self._turns < GRACE_TURNS:
            self._turns += 1
            self._handle = loop.call_soon(self._due)
        else:
            self._timeout.reschedule(loop.time())  # expires now: cancels the block

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._handle.cancel()
        self._clock.stop()
        await self._timeout.__aexit__(kind, exc, tb)

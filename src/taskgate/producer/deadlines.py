"""The API's calls to Redis and the broker: bounded in time, and failing as 503s.

Every call of the API runs under ``TASKGATE_BACKEND_TIMEOUT``: through :class:`Deadline`, or,
for submits, through the pipeline's own deadline per round trip (``autopipeline``). What goes
wrong becomes :class:`BackendUnavailable`, which the API answers with 503 and Retry-After.
"""

from __future__ import annotations

import asyncio
import math
import time
from types import TracebackType

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..exceptions import BackendUnavailable
from .metrics import REDIS_SECONDS
from .timeout import within

#: Seconds a submit script must run before the API's own deadline to count: the reply's way
#: back and the event loop's turn to read it fit in this (well under a millisecond on a
#: loopback; most of it is left for an API busy with requests that piled up during a stall).
SUBMIT_MARGIN = 0.25
#: How often the API measures Redis's clock again.
CLOCK_REFRESH = 60.0


class RedisClock:
    """Redis's clock as this process sees it, so a script can refuse to act after a deadline
    the API set: ``TIME`` is read with the shortest round trip of a few tries, and the offset
    is that reading minus the local time halfway through the round trip (off by at most half
    the round trip, :attr:`error`)."""

    def __init__(self, client: Redis, timeout: float) -> None:
        self.client, self.timeout = client, timeout
        self.offset = 0.0
        self.error = math.inf
        self._measured = -math.inf
        self._lock = asyncio.Lock()

    async def to_redis(self, local: float) -> float:
        """``local`` (a ``time.time()``) on Redis's clock, minus the measurement's error."""
        await self.ready()
        return self.at(local)

    async def ready(self) -> None:
        """Measure Redis's clock unless it was measured lately (:data:`CLOCK_REFRESH`)."""
        if time.monotonic() - self._measured > CLOCK_REFRESH:
            async with self._lock:
                if time.monotonic() - self._measured > CLOCK_REFRESH:
                    await self._measure()

    def at(self, local: float) -> float:
        """``local`` on Redis's clock as last measured (see :meth:`ready`), minus the error."""
        return local + self.offset - self.error

    async def _measure(self, tries: int = 3) -> None:
        best = math.inf
        async with within(self.timeout):
            for _ in range(tries):
                before = time.time()
                seconds, micros = await self.client.time()
                after = time.time()
                if after - before < best:
                    best = after - before
                    self.offset = seconds + micros / 1e6 - (before + after) / 2
        self.error = best / 2
        self._measured = time.monotonic()


class Deadline:
    """``async with``: the block runs within ``seconds`` (:func:`~.timeout.within`: a busy event
    loop still reads an answer that came in time) and its duration is observed; a timeout, a
    Redis or broker error, or an OS error becomes ``BackendUnavailable(component)``. A class
    rather than a generator-based context manager: it wraps every Redis call of the API."""

    __slots__ = ("seconds", "component", "_timeout", "_started")

    def __init__(self, seconds: float, component: str = "redis") -> None:
        self.seconds, self.component = seconds, component

    async def __aenter__(self) -> None:
        self._started = time.perf_counter()
        self._timeout = within(self.seconds)
        await self._timeout.__aenter__()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            await self._timeout.__aexit__(kind, exc, tb)
        except TimeoutError as timeout:  # the deadline passed (its cancellation became this)
            exc = timeout
        finally:
            REDIS_SECONDS.observe(time.perf_counter() - self._started)
        if isinstance(exc, RedisError | KombuOperationalError | OSError):
            raise unavailable(self.component, exc, self.seconds) from exc


def unavailable(component: str, exc: BaseException, seconds: float) -> BackendUnavailable:
    """The ``BackendUnavailable`` that a failed call to ``component`` stands for."""
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return BackendUnavailable(component, f"no answer within {seconds:g}s")
    return BackendUnavailable(component, str(exc) or type(exc).__name__)

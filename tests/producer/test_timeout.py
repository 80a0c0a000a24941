"""``producer.timeout.within``: a deadline that does not count the time this process's own event
loop was too busy to read an answer, and still ends on time on an idle loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import pytest

from taskgate.producer.timeout import MAX_LAG_FACTOR, within


def _busy_then_answered(deadline: Callable[[float], AbstractAsyncContextManager[object]]) -> str:
    """An answer comes 50 ms in, but the loop is blocked from 10 ms to 510 ms (a burst of other
    requests' work): the block's 200 ms deadline falls while the answer waits to be read."""

    async def main() -> str:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()
        loop.call_later(0.01, time.sleep, 0.5)
        loop.call_later(0.05, answer.set_result, "answered")
        async with deadline(0.2):
            return await answer

    return asyncio.run(main())


def test_an_answer_that_came_in_time_is_read_on_a_busy_loop() -> None:
    assert _busy_then_answered(within) == "answered"


def test_asyncio_timeout_reports_the_same_answer_as_missing() -> None:
    """What ``within`` replaces: counting wall time, the deadline falls on a busy loop."""
    with pytest.raises(TimeoutError):
        _busy_then_answered(asyncio.timeout)


def test_no_answer_on_an_idle_loop_ends_at_the_deadline() -> None:
    """Nothing is added but what the loop itself ran late (a starved CI process does run late,
    and that lateness is given back by design): the wait past 0.2 s, less that, stays small."""
    from taskgate.producer.timeout import lag_clock

    lag = 0.0

    async def main() -> None:
        nonlocal lag
        clock = lag_clock(asyncio.get_running_loop())
        before = clock.total
        try:
            async with within(0.2):
                await asyncio.Event().wait()
        finally:
            lag = clock.total - before

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(main())
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 0.45 + lag, (elapsed, lag)


def test_what_a_busy_loop_gives_back_is_bounded() -> None:
    """No answer, the loop blocked for 1 s: the deadline (0.1 s) is extended by at most
    MAX_LAG_FACTOR times itself, never waits for the loop's lateness as a whole to be repaid."""

    async def main() -> None:
        asyncio.get_running_loop().call_later(0.01, time.sleep, 1.0)
        async with within(0.1):
            await asyncio.Event().wait()

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        asyncio.run(main())
    elapsed = time.monotonic() - started
    # margin 0.3 s for a starved CI process; repaying the whole 1 s would end past 2 s
    assert 1.0 <= elapsed < 1.01 + 0.1 * MAX_LAG_FACTOR + 0.3, elapsed


def test_a_loop_that_used_a_deadline_is_not_kept_alive() -> None:
    """Each loop's lag clock is kept by the loop, weakly: a closed loop is freed (it was kept
    for the process's life, one per ``asyncio.run``)."""
    import gc

    from taskgate.producer import timeout

    async def main() -> None:
        async with within(0.1):
            pass

    before = len(timeout._clocks)
    for _ in range(5):
        asyncio.run(main())
    gc.collect()
    assert len(timeout._clocks) <= before

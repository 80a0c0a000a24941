"""Work on another thread's event loop: a :class:`~taskgate.Taskgate`'s clients belong to the
loop it was opened on, and these run a coroutine, or iterate an async iterator, there for a
caller on another loop (awaiting) or in blocking code (waiting in its thread)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, if any."""
    with contextlib.suppress(RuntimeError):
        return asyncio.get_running_loop()
    return None


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _refuse(awaitable: Awaitable[Any] | AsyncIterator[Any], message: str) -> RuntimeError:
    if asyncio.iscoroutine(awaitable):
        awaitable.close()  # never started: no "never awaited" warning
    return RuntimeError(message)


def _not_running(loop: asyncio.AbstractEventLoop) -> str | None:
    if loop.is_running():
        return None
    return ("the Taskgate's event loop is not running (it was closed, or opened with "
            "run_until_complete and left): waiting on it would never end")


async def run(awaitable: Awaitable[T], loop: asyncio.AbstractEventLoop) -> T:
    """``await awaitable`` on ``loop``, from the running loop (the same one or another)."""
    if asyncio.get_running_loop() is loop:
        return await awaitable
    if (problem := _not_running(loop)) is not None:
        raise _refuse(awaitable, problem)
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_awaited(awaitable), loop))


def run_sync(awaitable: Awaitable[T], loop: asyncio.AbstractEventLoop, what: str) -> T:
    """``awaitable`` run on ``loop``, waited for in this thread; refused in a thread running an
    event loop, which it would block (``what``: what to do instead), and when ``loop`` is not
    running (it would wait for ever)."""
    if running_loop() is not None:
        raise _refuse(awaitable, f"a blocking taskgate call in a running event loop would block it: {what}")
    if (problem := _not_running(loop)) is not None:
        raise _refuse(awaitable, problem)
    return asyncio.run_coroutine_threadsafe(_awaited(awaitable), loop).result()


_END = object()


def _pump(source: AsyncIterator[Any], put: Callable[[Any], object]) -> Coroutine[Any, Any, None]:
    """Hand every item of ``source`` to ``put``, then ``(_END, error or None)``."""

    async def pump() -> None:
        try:
            async for item in source:
                put(item)
        except BaseException as exc:  # handed over to the consumer
            put((_END, exc))
            return
        put((_END, None))

    return pump()


def _unpacked(item: Any) -> Any:
    """``item``, or ``_END`` once the source ended (raising its error, if any)."""
    if isinstance(item, tuple) and len(item) == 2 and item[0] is _END:
        if item[1] is not None:
            raise item[1]
        return _END
    return item


def iterate(source: AsyncIterator[T], loop: asyncio.AbstractEventLoop) -> AsyncIterator[T]:
    """``source`` (run on ``loop``) iterated on the running loop."""
    if asyncio.get_running_loop() is loop:
        return source
    return _iterate_there(source, loop)


async def _iterate_there(source: AsyncIterator[T], loop: asyncio.AbstractEventLoop) -> AsyncIterator[T]:
    here = asyncio.get_running_loop()
    items: asyncio.Queue[Any] = asyncio.Queue()
    future = asyncio.run_coroutine_threadsafe(
        _pump(source, lambda item: here.call_soon_threadsafe(items.put_nowait, item)), loop)
    try:
        while (item := _unpacked(await items.get())) is not _END:
            yield item
    finally:
        future.cancel()


def iterate_sync(source: AsyncIterator[T], loop: asyncio.AbstractEventLoop, what: str) -> Iterator[T]:
    """``source`` (run on ``loop``) iterated in this thread (refused as :func:`run_sync` is)."""
    if running_loop() is not None:
        raise RuntimeError(f"a blocking taskgate call in a running event loop would block it: {what}")
    if (problem := _not_running(loop)) is not None:
        raise RuntimeError(problem)
    items: queue.SimpleQueue[Any] = queue.SimpleQueue()
    future = asyncio.run_coroutine_threadsafe(_pump(source, items.put), loop)
    try:
        while (item := _unpacked(items.get())) is not _END:
            yield item
    finally:
        future.cancel()

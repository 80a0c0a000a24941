"""Running ``async def`` tasks: one event loop per pool process (per thread, for a thread
pool), kept for the process's life, so a task may hold clients bound to it between runs.

A run is the task's coroutine as an asyncio task, next to a watcher that reads the task's
cancel flag every :data:`~taskgate.worker.running.CANCEL_CHECK_INTERVAL` (off the loop, in a
thread) and cancels the coroutine when it is set: the coroutine sees ``CancelledError`` at its
next ``await`` and the task ends ``cancelled``. ``report_progress``, ``cancel_requested`` and
``raise_if_cancelled`` work inside it as in a sync task (the running task's context is the
coroutine's). A soft time limit cancels the coroutine and fails the task with
``SoftTimeLimitExceeded``; the hard limit and ``terminate`` kill the process, as for sync
tasks. A coroutine cancelled by anything else fails the task like any exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Coroutine
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from ..exceptions import TaskCancelled
from ..records import keys
from .running import CANCEL_CHECK_INTERVAL, Running, records

_local = threading.local()


def event_loop() -> asyncio.AbstractEventLoop:
    """This thread's loop for running tasks (a new one after a fork)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed() or getattr(_local, "pid", None) != os.getpid():
        loop = asyncio.new_event_loop()
        _local.loop, _local.pid = loop, os.getpid()
    return loop


def run(coroutine: Coroutine[Any, Any, Any], running: Running) -> Any:
    """Run a task's coroutine to its end on this thread's loop; ``TaskCancelled`` when the
    task was cancelled on request, ``SoftTimeLimitExceeded`` when its soft time limit cancelled
    it, and a ``RuntimeError`` (an ordinary failure, never a dead pool process) when something
    else cancelled it."""
    loop = event_loop()
    work = loop.create_task(coroutine)
    watcher = loop.create_task(_watch(work, running))
    soft = _SoftLimit(loop, work)
    try:
        return loop.run_until_complete(work)
    except asyncio.CancelledError:
        if soft.fired:
            raise SoftTimeLimitExceeded() from None
        if running.cancel:
            raise TaskCancelled("cancelled on request", running.task_id) from None
        raise RuntimeError("the task's coroutine was cancelled, not on request: it awaited a task or "
                           "future that was cancelled") from None
    except BaseException:
        # Raised outside the coroutine (a signal landing while the loop waited): the coroutine
        # is cancelled and awaited, so nothing of it runs on into the next task.
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(work)
        raise
    finally:
        soft.restore()
        watcher.cancel()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(watcher)


class _SoftLimit:
    """While a coroutine runs in the main thread: Celery's soft time limit signal (SIGUSR1,
    whose handler raises ``SoftTimeLimitExceeded`` wherever the thread is, possibly inside the
    loop's own callbacks, where asyncio would log and drop it) cancels the coroutine instead."""

    def __init__(self, loop: asyncio.AbstractEventLoop, work: asyncio.Task[Any]) -> None:
        self.fired = False
        self.previous: Any = None
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only (a thread pool has no soft limits)

        def on_soft_limit(_signum: int, _frame: Any) -> None:
            self.fired = True
            loop.call_soon_threadsafe(work.cancel, "soft time limit exceeded")

        self.previous = signal.signal(signal.SIGUSR1, on_soft_limit)

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGUSR1, self.previous)


async def _watch(work: asyncio.Task[Any], running: Running) -> None:
    """Cancel ``work`` once the task's cancel flag is set."""
    client = records().client
    record = keys.record(running.task_id)
    while not work.done():
        await asyncio.sleep(CANCEL_CHECK_INTERVAL)
        with contextlib.suppress(Exception):  # a Redis blip: read it next time
            if await asyncio.to_thread(client.hget, record, "cancel") == b"1":
                running.cancel = True
                work.cancel("cancelled on request")
                return

"""Running ``async def`` tasks: one event loop per pool process (per thread, for a thread
pool), kept for the process's life, so a task may hold clients bound to it between runs.

A run is the task's coroutine as an asyncio task, next to a watcher that reads the task's
cancel flag every :data:`~taskgate.worker.running.CANCEL_CHECK_INTERVAL` (off the loop, in a
thread) and cancels the coroutine when it is set: the coroutine sees ``CancelledError`` at its
next ``await`` and the task ends ``cancelled``. ``report_progress``, ``cancel_requested`` and
``raise_if_cancelled`` work inside it as in a sync task (the running task's context is the
coroutine's). A soft time limit (Celery's signal, raised wherever the loop is) cancels the
coroutine and fails the task with ``SoftTimeLimitExceeded``; the hard limit and ``terminate``
kill the process, as for sync tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine
from typing import Any

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
    task was cancelled on request."""
    loop = event_loop()
    work = loop.create_task(coroutine)
    watcher = loop.create_task(_watch(work, running))
    try:
        return loop.run_until_complete(work)
    except asyncio.CancelledError:
        if running.cancel:
            raise TaskCancelled("cancelled on request", running.task_id) from None
        raise
    except BaseException:
        # Raised outside the coroutine (a soft time limit landing while the loop waited):
        # the coroutine is cancelled and awaited, so nothing of it runs on into the next task.
        if not work.done():
            work.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(work)
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(watcher)


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

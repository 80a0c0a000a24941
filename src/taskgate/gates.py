"""The Taskgates of one process: those open, the latest of which ``task.submit()`` uses (see
:meth:`~taskgate.Taskgate.current`); without one, the process-wide Taskgate, made from the
TASKGATE_* environment (the worker's settings inside a worker) and opened on first use; the
event loops on threads of their own that run a Taskgate for blocking code (``with tg:``, and
that process-wide one); and the environment a Taskgate without settings reads."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import TYPE_CHECKING

from .config import Settings

if TYPE_CHECKING:
    from .gate import Taskgate

log = logging.getLogger("taskgate")

#: Open Taskgates of this process, the latest last (see :meth:`Taskgate.current`).
opened: list[Taskgate] = []
_default_lock = threading.Lock()
_default: tuple[int, Taskgate] | None = None


def loop_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """A new event loop, running on a daemon thread of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="taskgate-client", daemon=True)
    thread.start()
    return loop, thread


def stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread | None) -> None:
    """Stop ``loop`` and its ``thread`` (waiting for it up to 10 s), and close the loop."""
    loop.call_soon_threadsafe(loop.stop)
    if thread is not None:
        thread.join(10)
    if not loop.is_running():
        loop.close()


def default() -> Taskgate:
    """The process-wide Taskgate (see :meth:`Taskgate.current`), opened on a daemon thread's
    event loop on first use (again in a forked child)."""
    global _default
    with _default_lock:
        if _default is not None and _default[0] == os.getpid():
            return _default[1]
        from .gate import Taskgate
        from .worker.running import worker_settings

        gate = Taskgate(worker_settings())
        # Opened there, waited for by the first call (awaited from a coroutine: no loop blocks).
        gate._open_on_thread(wait=False)
        _default = (os.getpid(), gate)
        log.debug("taskgate: opened a process-wide Taskgate for task.submit()")
        return gate


def environment() -> Settings:
    """TASKGATE_* settings as the environment says now (not ``get_settings()``'s cached ones);
    without a Redis URL, those of the ``taskgate up`` running on this data dir (its embedded
    Valkey), as the CLI commands find it."""
    settings = Settings()
    if settings.redis_url is None and settings.result_backend is None:
        from .service import instance

        if instance.join(settings) is not None:
            settings = Settings()
    return settings

"""The webhook deliverer's own process, beside each worker's main process.

Sending webhooks costs Python per delivery (signing, HTTP, recording the outcome). In a thread of
the worker's main process it shared that process's GIL with the consumer handing messages to the
pool, and slowed every task. Here the keeper (``recovery``) starts a Python process running
:func:`main` (:class:`DelivererProcess`), handing it the worker's settings as
one JSON line on stdin. The process runs :class:`~taskgate.worker.webhooks.Deliverer` at a lower
CPU priority (:data:`NICENESS`): on a busy machine tasks go first and deliveries catch up when
the workers have room (a delivery is never lost for waiting: it stays due in Redis).

It stops when it reads ``stop`` on stdin (the keeper's :meth:`DelivererProcess.stop`), on SIGTERM,
or once its parent is gone (a worker killed outright: checked every
:data:`~taskgate.worker.webhooks.TICK` s), each time giving its sends under way
:data:`~taskgate.worker.webhooks.STOP_GRACE` s. A frozen worker does not stop it. One that dies
is started again by the keeper's next pass. With ``TASKGATE_OTEL=on`` it sets up OpenTelemetry's
SDK as the worker does (``service.telemetry``, service name ``taskgate-webhooks`` unless
``OTEL_SERVICE_NAME`` says otherwise, inherited from the worker with the other ``OTEL_*``), so
each attempt's CLIENT span is exported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading

import orjson

from ..config import Settings
from ..service import logs, telemetry
from .webhooks import STOP_GRACE, TICK, Deliverer

log = logging.getLogger("taskgate.webhooks")

#: How much lower the deliverer's CPU priority is than its worker's (``os.nice``).
NICENESS = 10
#: What the keeper writes on the deliverer's stdin to stop it.
STOP = b"stop\n"


class DelivererProcess:
    """The keeper's handle on its deliverer process: :meth:`start`, :meth:`check` (start it
    again if it died), :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        level = logging.getLevelName(logging.getLogger("taskgate").getEffectiveLevel())
        self.proc = subprocess.Popen(
            # -c, not -m: taskgate.worker imports this module, and runpy warns running it as __main__
            [sys.executable, "-c", "from taskgate.worker.webhook_process import main; main()", str(level)],
            stdin=subprocess.PIPE, close_fds=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.settings.model_dump_json().encode() + b"\n")
        self.proc.stdin.flush()

    def check(self) -> None:
        """Start the deliverer again if it ended (its exit was logged by it, or it was killed)."""
        if self.proc is not None and self.proc.poll() is not None:
            log.warning("taskgate webhooks: the deliverer (pid %d) ended with %s; starting another",
                        self.proc.pid, self.proc.returncode)
            self.start()

    def stop(self) -> None:
        """Ask it to stop; sends under way get their grace, then it is killed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):  # it is gone already
            assert proc.stdin is not None
            proc.stdin.write(STOP)
            proc.stdin.close()
        try:
            proc.wait(STOP_GRACE + 2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _watch(deliverer: Deliverer, loop: asyncio.AbstractEventLoop, parent: int) -> None:
    """In a thread: stop the deliverer at ``stop`` or the end of stdin, or once ``parent`` is
    gone (this process is then another's child)."""
    done = threading.Event()

    def read_stdin() -> None:
        with contextlib.suppress(OSError, ValueError):
            while (line := sys.stdin.buffer.readline()) and line != STOP:
                pass
        done.set()

    threading.Thread(target=read_stdin, name="taskgate-webhooks-stdin", daemon=True).start()
    while not done.wait(TICK) and os.getppid() == parent:
        pass
    with contextlib.suppress(RuntimeError):  # the loop has closed already
        loop.call_soon_threadsafe(deliverer.stop)


async def _main(settings: Settings, parent: int) -> None:
    deliverer = Deliverer(settings)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, deliverer.stop)
    loop.add_signal_handler(signal.SIGINT, deliverer.stop)
    threading.Thread(target=_watch, args=(deliverer, loop, parent), name="taskgate-webhooks-watch",
                     daemon=True).start()
    await deliverer.main()


def main() -> None:
    os.nice(NICENESS)
    parent = os.getppid()
    logs.setup(sys.argv[1] if len(sys.argv) > 1 else "INFO")
    settings = Settings(**orjson.loads(sys.stdin.buffer.readline()))
    telemetry.start(settings, "webhooks")  # TASKGATE_OTEL=on: its attempts' spans, as the worker's
    code = 0
    try:
        asyncio.run(_main(settings, parent))
    except Exception:  # logged here; the keeper starts another
        log.exception("taskgate webhooks: the deliverer stopped")
        code = 1
    finally:
        telemetry.shutdown()  # export what it still holds
        logging.shutdown()
    # Its work is recorded and its output flushed: skip the interpreter's teardown, which at
    # nice +10 on a busy machine took seconds of the keeper's wait for it (0.15 s of CPU).
    os._exit(code)

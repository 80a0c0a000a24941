"""``taskgate api``: the API in one process, or in several sharing one port (``--workers N``).

Several processes run under uvicorn's own supervisor (``uvicorn.supervisors.Multiprocess``):
it binds the port once and hands the listening socket to N children it spawns, each a whole
API (its own event loop, Redis pools and Taskgate). Every child accepts from that one socket,
so the kernel gives a new connection to a child that is waiting for one (a busy one is not).
A child that wakes accepts every connection queued, so a burst of connections opened at once
may all land on one child and stay there while kept alive. Chosen over the alternatives:

- SO_REUSEPORT, a socket per process: the kernel spreads connections by a hash of their
  addresses, blind to load (a child stuck in a long request keeps its share), each socket has
  its own backlog (connections queued at a dying child are reset), and another program of the
  same user can bind the port beside us without an error;
- a supervisor of our own over an inherited socket: uvicorn's already restarts a child that
  dies or stops answering its health ping (every 0.5 s), stops them all on SIGTERM/SIGINT
  (each finishes its requests, ``timeout_graceful_shutdown``), and rolls them over on SIGHUP.

What this module adds to it: each child gets SIGTERM if the supervisor dies (Linux's
parent-death signal, as ``up`` sets in its components), so a killed ``taskgate api`` leaves no
child serving the port; a child failing at startup (bad settings) stops the supervisor with
exit code 3, not a restart loop; and the Prometheus client's multiprocess mode, so that
``GET /metrics`` from any child sums every child's counters (see ``producer.metrics``).

What each child does once at startup is safe to do N times: publishing the catalogue and the
declared limits (``producer.startup``) writes the same fields, and the key-layout upgrade
renames with RENAMENX, skipping what another process moved. The API runs no keeper of its
own (the workers do), and its live feed subscribes per process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from . import logs, telemetry
from .bound import bind_to_parent

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ..config import Settings

#: The Prometheus client's multiprocess directory (read by each child as it imports the client).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def serve(settings: Settings, *, host: str, port: int, log_level: str, access_log: bool,
          workers: int = 1) -> int:
    """Serve the API on ``host:port`` in ``workers`` processes until stopped; the exit code.
    ``ConfigurationError`` before anything is bound if the settings cannot serve ``host``."""
    import uvicorn

    from ..api import create_app
    from ..api.app import auth_enabled

    log_config = logs.uvicorn_config(log_level) or uvicorn.config.LOGGING_CONFIG
    options: dict[str, Any] = {"host": host, "port": port, "log_level": log_level, "access_log": access_log,
                               "timeout_graceful_shutdown": 10, "log_config": log_config}
    if workers == 1:
        telemetry.start(settings, "api")  # before the app: it answers in spans once traced
        uvicorn.run(create_app(settings, host=host, log_submits=access_log), **options)
        return 0
    auth_enabled(settings, host)  # a refused bind is said once, here, not by every child
    if settings.otel:
        telemetry.require()  # and a missing extra (each child sets up its own provider)
    with metrics_directory():
        # The app travels to each spawned child as this picklable factory; it is built there.
        factory = partial(child_app, settings, host, access_log, log_level, os.getpid())
        config = uvicorn.Config(factory, factory=True, workers=workers, **options)
        children = _Children(config, sockets=[config.bind_socket()])
        children.run()
    return STARTUP_FAILURE if children.failed_at_startup else 0


def child_app(settings: Settings, host: str, log_submits: bool, log_level: str, parent: int) -> FastAPI:
    """One child's app (called in the child): bound to the supervisor's life, logging as it does."""
    from ..api import create_app
    from ..exceptions import ConfigurationError

    bind_to_parent(signal.SIGTERM, parent)
    logs.setup(log_level)
    try:
        telemetry.start(settings, "api")
        return create_app(settings, host=host, log_submits=log_submits)
    except (ImportError, ConfigurationError) as exc:  # e.g. a task module that does not import
        # Raised from here, it would end the child with 1, respawned forever; STARTUP_FAILURE (as
        # uvicorn exits a child whose lifespan fails) makes the supervisor stop them all.
        sys.stderr.write(f"taskgate: cannot start the API: {exc}\n")
        sys.exit(STARTUP_FAILURE)


@contextlib.contextmanager
def metrics_directory() -> Iterator[Path]:
    """The Prometheus client's multiprocess directory for this run's children, in the environment
    they inherit: PROMETHEUS_MULTIPROC_DIR if set (it exists: ``import taskgate`` has already
    written this process's files there; every ``*.db`` file is removed, as the client requires
    between runs, so give each ``taskgate api`` its own), else a new temporary directory, removed
    at the end (this process then stays out of multiprocess mode: it serves nothing)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        yield fresh_metrics_directory(Path(given))
        return
    path = Path(tempfile.mkdtemp(prefix="taskgate-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(path, ignore_errors=True)


def fresh_metrics_directory(path: Path) -> Path:
    """``path``, made if missing, without the metric files (``*.db``) of an earlier run."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


class _Children(Multiprocess):
    """uvicorn's supervisor, telling the metrics when a child is replaced and whether one failed
    at startup (then uvicorn stops them all but exits 0 from ``uvicorn.run``)."""

    def keep_subprocess_alive(self) -> None:
        from prometheus_client import multiprocess

        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            # its live gauges leave the scrape; its counters stay counted
            multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

    @property
    def failed_at_startup(self) -> bool:
        return any(process.exitcode == STARTUP_FAILURE for process in self.processes)

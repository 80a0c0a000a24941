"""taskgate's pytest plugin (entry point ``pytest11``): a real worker for your app's tests.

Request the fixture ``taskgate_worker`` in a test. On its first use in a session it starts a
private embedded Valkey (in a temporary directory, on a free loopback port) and a real ``taskgate
worker`` importing the modules named by the ini option ``taskgate_tasks`` (else
TASKGATE_TASK_MODULES), and points taskgate's settings at them (TASKGATE_REDIS_URL and friends
in ``os.environ``), so your app under FastAPI's ``TestClient``, ``await task.submit()`` and
``task.submit_sync()`` all use them. Before each test that uses it, every record, result, queued
message, schedule and key of that private server is removed (the worker's broker bindings and
heartbeat stay), so each test starts with an empty history; if the test before left a task in the
worker's hands (queued, prefetched or running), the worker is killed and started again first, so
nothing of that test runs or writes into the next one. At the session's end the worker and the
server are stopped by pid. See README, "Testing your app".

A session that never requests the fixture starts nothing, changes no setting and adds no
autouse fixture: only the ini option is registered.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from redis import Redis

#: The ini option naming the modules that declare your tasks.
INI = "taskgate_tasks"
#: Seconds the worker gets to start (import your modules, connect) before the fixture fails.
READY_TIMEOUT = 60.0
#: Seconds the worker and the server get to stop after SIGTERM before they are killed.
STOP_GRACE = 10.0
#: Keys a test's cleanup keeps: the worker's broker bindings, its heartbeat (the tasks it has),
#: the catalogue an app publishes, the records' layout mark, kombu's restore lock.
KEPT = (b"_kombu.binding.", b"taskgate:worker:", b"taskgate:catalogue", b"taskgate:layout", b"unacked_mutex")
#: Settings the session sets, and those it unsets so nothing reaches another broker or backend.
UNSET = ("TASKGATE_BROKER_URL", "TASKGATE_RESULT_BACKEND")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(INI, "Modules that declare your tasks (e.g. tasks or myapp.tasks), imported by the "
                  "taskgate_worker fixture's worker; default: TASKGATE_TASK_MODULES.",
                  type="args", default=[])


@dataclass
class TaskgateServers:
    """What ``taskgate_worker`` started for the session: a private Valkey and a worker."""

    #: The private Valkey, as TASKGATE_REDIS_URL now says.
    redis_url: str
    #: The modules the worker imported.
    task_modules: list[str]
    #: The worker's output (Celery's log): read it when a task does not behave.
    worker_log: Path
    #: Seconds from the fixture's start to a worker ready to run tasks.
    setup_seconds: float = 0.0
    _processes: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _client: Redis | None = field(default=None, repr=False)

    def clear(self) -> None:
        """Remove taskgate's records, results, queued messages, schedules and keys from the
        private server, keeping the worker's bindings and heartbeat."""
        client = self._redis()
        doomed = [name for name in client.scan_iter(count=1000) if not name.startswith(KEPT)]
        for start in range(0, len(doomed), 1000):
            client.unlink(*doomed[start:start + 1000])

    def busy(self) -> bool:
        """Whether a task may be in the worker's hands: a record not ended, a message kombu has
        delivered and not acknowledged, or a run marked alive."""
        from .records import keys
        from .states import TaskState

        ended = {state.value.encode() for state in TaskState if state.is_terminal}

        client = self._redis()
        alive = client.scan_iter(match=f"{keys.ALIVE_PREFIX}*", count=1000)
        if client.hlen(keys.KOMBU_UNACKED) or any(alive):
            return True
        with client.pipeline(transaction=False) as pipe:
            for name in client.scan_iter(match=f"{keys.RECORD_PREFIX}*", count=1000):
                pipe.hget(name, "state")
            states = pipe.execute()
        return any(state not in ended for state in states)

    def restart_worker(self, config: pytest.Config) -> None:
        """Kill the worker (its whole process group: no warm shutdown waiting for a running task),
        forget its heartbeat, empty the server and start a new worker."""
        from .records import keys

        worker = self._processes.pop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        client = self._redis()
        for name in client.scan_iter(match=f"{keys.WORKER_PREFIX}*", count=1000):
            client.unlink(name)
        self.clear()
        _start_worker(config, self)

    def _redis(self) -> Redis:
        if self._client is None:
            from redis import Redis

            self._client = Redis.from_url(self.redis_url, socket_timeout=10)
        return self._client

    def stop(self) -> None:
        """Stop the worker, then the server (SIGTERM, SIGKILL after STOP_GRACE), by pid."""
        if self._client is not None:
            self._client.close()
        for process in reversed(self._processes):
            _stop(process)


def task_modules(config: pytest.Config) -> list[str]:
    """The modules named by ``taskgate_tasks`` (spaces or commas), else TASKGATE_TASK_MODULES."""
    named = [part.strip() for item in config.getini(INI) for part in item.split(",") if part.strip()]
    if named:
        return named
    return [part.strip() for part in os.environ.get("TASKGATE_TASK_MODULES", "").split(",") if part.strip()]


@pytest.fixture(scope="session")
def taskgate_session(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[TaskgateServers]:
    """The session's private Valkey and worker, with taskgate's settings pointed at them
    (``taskgate_worker`` also empties the server before each test; use that one)."""
    from .config import get_settings

    modules = task_modules(request.config)
    if not modules:
        pytest.fail(f"taskgate_worker: no task modules for its worker: name the modules that declare "
                    f"your tasks in pytest's configuration ({INI} = tasks under [pytest] in pytest.ini, "
                    f'or {INI} = ["tasks"] under [tool.pytest.ini_options] in pyproject.toml), or in '
                    "TASKGATE_TASK_MODULES (taskgate.tasks for the built-in tasks alone)", pytrace=False)
    began = time.perf_counter()
    directory = tmp_path_factory.mktemp("taskgate")
    servers = TaskgateServers("", modules, directory / "worker.log")
    patch = pytest.MonkeyPatch()
    try:
        valkey = _start_valkey(directory, servers)
        for name in UNSET:
            patch.delenv(name, raising=False)
        patch.setenv("TASKGATE_REDIS_URL", valkey)
        patch.setenv("TASKGATE_TASK_MODULES", ",".join(modules))
        patch.setenv("TASKGATE_DATA_DIR", str(directory / "data"))
        get_settings.cache_clear()
        servers.redis_url = valkey
        _start_worker(request.config, servers)
        servers.setup_seconds = time.perf_counter() - began
        yield servers
    finally:
        patch.undo()
        get_settings.cache_clear()
        servers.stop()


@pytest.fixture
def taskgate_worker(request: pytest.FixtureRequest, taskgate_session: TaskgateServers) -> TaskgateServers:
    """A real taskgate worker and a private Valkey, started once per session, taskgate's settings
    pointed at them, and an empty history for this test (see the module's docstring)."""
    if taskgate_session.busy():
        taskgate_session.restart_worker(request.config)
    taskgate_session.clear()
    return taskgate_session


def _start_valkey(directory: Path, servers: TaskgateServers) -> str:
    """Start the embedded Valkey as ``taskgate up`` does (a child that prints its URL first);
    return its URL."""
    from .service.supervisor import die_with_parent

    with (directory / "valkey.log").open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "taskgate.service.embedded", "--data-dir",
                                    str(directory)], stdout=subprocess.PIPE, stderr=log, cwd=directory,
                                   start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
    servers._processes.append(process)
    assert process.stdout is not None
    url = process.stdout.readline().decode().strip()
    if not url:
        process.wait(STOP_GRACE)
        pytest.fail(f"taskgate_worker: the embedded Valkey did not start (exit code {process.returncode}): "
                    f"{(directory / 'valkey.log').read_text()[-2000:]}", pytrace=False)
    return url


def _start_worker(config: pytest.Config, servers: TaskgateServers) -> None:
    """Start ``taskgate worker`` in the project's directory, importing what the tests import;
    return once its heartbeat is in Redis (it consumes then)."""
    from .records.workers import heartbeats
    from .service.supervisor import die_with_parent

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(_import_paths(config))
    argv = [sys.executable, "-m", "taskgate", "worker", "--concurrency=2", "--log-level=info",
            f"--tasks={','.join(servers.task_modules)}"]
    with servers.worker_log.open("ab") as log:
        # Killed if this test process dies unannounced: nothing is left running.
        process = subprocess.Popen(argv, env=env, cwd=config.rootpath, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=die_with_parent(signal.SIGKILL))
    servers._processes.append(process)
    deadline = time.monotonic() + READY_TIMEOUT
    while not heartbeats(servers._redis()):
        if process.poll() is not None or time.monotonic() > deadline:
            what = (f"exited with code {process.returncode}" if process.returncode is not None
                    else f"was not ready after {READY_TIMEOUT:.0f} s")
            pytest.fail(f"taskgate_worker: the worker ({' '.join(argv[2:])}, in {config.rootpath}) {what}; "
                        f"its log ({servers.worker_log}) ends:\n"
                        f"{servers.worker_log.read_text(errors='replace')[-3000:]}", pytrace=False)
        time.sleep(0.05)


def _import_paths(config: pytest.Config) -> list[str]:
    """Where the worker finds your modules: the project's directory, then this process's own
    import paths outside the interpreter's (pytest's ``pythonpath``, the test directories it
    inserted), then the PYTHONPATH it was given."""
    interpreter = {Path(prefix).resolve() for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    paths = [str(config.rootpath), str(config.invocation_params.dir)]
    for entry in sys.path:
        where = Path(entry or os.getcwd()).resolve()
        if where.is_dir() and not any(where.is_relative_to(prefix) for prefix in interpreter):
            paths.append(str(where))
    paths += [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    return list(dict.fromkeys(paths))


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process we started, SIGKILL its whole group after STOP_GRACE (a worker's pool
    children too), and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_GRACE)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()

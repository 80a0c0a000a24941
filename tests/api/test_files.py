"""Large files: streamed uploads and process_file, with flat memory."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from ..helpers import start_api, stop, submit, wait
from .test_auth import bearer, new_key


def upload(client: httpx.Client, content: bytes | Iterator[bytes], **params: Any) -> dict[str, Any]:
    response = client.post("/files", content=content, params=params,
                           headers={"content-type": "application/octet-stream"}, timeout=300)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_csv_upload_is_summarised(client: httpx.Client) -> None:
    data = b"name,email,age\nann,ann@example.com,31\nbob,,42\ncyd,cyd@example.com,\n"
    stored = upload(client, data, filename="people.csv")
    assert stored["size"] == len(data) and stored["filename"] == "people.csv"
    task = wait(client, submit(client, "process_file", {"file_id": stored["file_id"]}))
    assert task["state"] == "succeeded", task
    assert task["result"] == {
        "file_id": stored["file_id"], "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "lines": 4,
        "csv": {"columns": ["name", "email", "age"], "rows": 3,
                "non_empty": {"name": 3, "email": 2, "age": 2}},
    }


def test_binary_upload_has_no_csv_summary(client: httpx.Client) -> None:
    data = bytes(range(256)) * 1000 + b"tail without newline"
    stored = upload(client, data)
    task = wait(client, submit(client, "process_file", {"file_id": stored["file_id"]}))
    result = task["result"]
    assert result["csv"] is None and result["size"] == len(data)
    assert result["lines"] == data.count(b"\n") + 1
    assert client.delete(f"/files/{stored['file_id']}").status_code == 204
    assert client.delete(f"/files/{stored['file_id']}").status_code == 404


def test_missing_or_bad_file_id(client: httpx.Client) -> None:
    assert client.post("/tasks/process_file", json={"file_id": "../../etc/passwd"}).status_code == 422
    unknown = client.post("/tasks/process_file", json={"file_id": "0" * 32})
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"]["message"] == f"no uploaded file {'0' * 32}: upload it with POST /files"
    # A file deleted after the submit: the task fails, naming no server path.
    stored = upload(client, b"gone")
    task_id = submit(client, "process_file", {"file_id": stored["file_id"]}, countdown=1)
    assert client.delete(f"/files/{stored['file_id']}").status_code == 204
    task = wait(client, task_id)
    assert task["state"] == "failed"
    assert task["error"]["type"] == "FileNotFoundError"
    assert "/" not in task["error"]["message"].replace("POST /files", "")  # no server path leaks


def test_a_file_is_its_uploaders(secured: str, redis_url: str, worker: subprocess.Popen[bytes]) -> None:
    """Another owner's key gets 404 processing or deleting an upload, as for an unknown id;
    the owner and admins use it."""
    alice, bob = bearer(new_key(redis_url, "alice-files")), bearer(new_key(redis_url, "bob-files"))
    admin = bearer(new_key(redis_url, "ops-files", admin=True))
    data = b"name,secret\nann,42\n"
    with httpx.Client(base_url=secured, timeout=10, headers=alice) as http:
        mine = upload(http, data, filename="secret.csv")["file_id"]
        bobs = http.post("/files", content=b"bob's own", headers={**bob, "content-type": "text/plain"})
        assert bobs.status_code == 201
        bobs_id = bobs.json()["file_id"]
        process = {"file_id": mine}
        refused = http.post("/tasks/process_file", json=process, headers=bob)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"] == {"type": "not_found", "retryable": False,
                                           "message": f"no uploaded file {mine}: upload it with POST /files"}
        assert http.delete(f"/files/{mine}", headers=bob).status_code == 404
        # In a batch, bob's item naming alice's file is refused in its place; his own file is queued.
        batch = http.post("/tasks/process_file/batch", headers=bob,
                          json={"items": [process, {"file_id": bobs_id}]})
        assert batch.status_code == 202, batch.text
        first, second = batch.json()["tasks"]
        assert first["task_id"] is None and first["error"]["type"] == "file_not_found"
        assert mine in first["error"]["message"] and second["task_id"] is not None
        only_foreign = http.post("/tasks/process_file/batch", headers=bob, json={"items": [process]})
        assert only_foreign.status_code == 422 and mine in only_foreign.json()["error"]["message"]
        # The owner and an admin run it; the file is still there after bob's attempts.
        for headers in (alice, admin):
            http.headers.update(headers)
            task = wait(http, submit(http, "process_file", process))
            assert task["state"] == "succeeded", task
            assert task["result"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert http.delete(f"/files/{bobs_id}").status_code == 204  # as the admin
        assert http.delete(f"/files/{mine}", headers=alice).status_code == 204


def test_upload_over_the_limit_is_413(redis_url: str, tmp_path: Path) -> None:
    proc, base = start_api(redis_url, tmp_path / "api.log", TASKGATE_MAX_UPLOAD_BYTES="1000")
    try:
        declared = httpx.post(base + "/files", content=b"x" * 2000)
        assert declared.status_code == 413
        assert declared.json()["error"]["type"] == "payload_too_large"
        streamed = httpx.post(base + "/files", content=iter([b"x" * 600, b"x" * 600]))
        assert streamed.status_code == 413
        assert httpx.post(base + "/files", content=b"x" * 1000).status_code == 201
    finally:
        stop(proc)


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _reset_peak(pid: int) -> int:
    """Reset the process's peak RSS (VmHWM) to its RSS now (Linux's clear_refs), which it returns:
    what earlier tests made the session's processes peak at is not counted."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return _rss_kib(pid, "VmRSS")


def _growth_mib(pid: int, before_kib: int) -> int:
    return (_rss_kib(pid, "VmHWM") - before_kib) // 1024


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [pid] + [p for child in out.split() for p in _tree(int(child))]


def test_a_big_file_streams_through_with_flat_memory(api_server: tuple[subprocess.Popen[bytes], str],
                                                     worker: subprocess.Popen[bytes]) -> None:
    """256 MiB up through the real API process (over HTTP) and through process_file: neither the
    API nor any worker process grows by an eighth of that (32 MiB), so both stream it; holding
    the file, or any share of it above an eighth, would grow one of them past the bound."""
    api, base = api_server
    # Rows of 1 KiB (a wide last column): the csv module's parsing, not the number of rows, is
    # what the worker's memory would follow; 256 Ki rows keep the test's time in the streaming.
    line = b"12345,abcdefghij," + b"x" * 1006 + b"\n"
    size, chunk = 256 << 20, line * 640  # 640 KiB pieces
    bound_mib, rows = (size >> 20) // 8, size // len(line) - 1  # the first line is the header
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            digest.update(piece)
            sent += len(piece)
            yield piece

    api_before = _reset_peak(api.pid)
    workers_before = {pid: _reset_peak(pid) for pid in _tree(worker.pid)}
    started = time.monotonic()
    with httpx.Client(base_url=base, timeout=60) as http:
        stored = upload(http, body(), filename="big.csv")
        assert stored["size"] == size
        api_growth_mib = _growth_mib(api.pid, api_before)
        uploaded = time.monotonic()
        assert api_growth_mib < bound_mib, f"the API grew {api_growth_mib} MiB receiving {size >> 20} MiB"
        task = wait(http, submit(http, "process_file", {"file_id": stored["file_id"]}), 100)
        assert task["state"] == "succeeded", task
        assert task["result"]["sha256"] == digest.hexdigest() and task["result"]["size"] == size
        assert task["result"]["csv"] == {"columns": ["12345", "abcdefghij", "x" * 1006], "rows": rows,
                                         "non_empty": dict.fromkeys(["12345", "abcdefghij", "x" * 1006], rows)}
        assert set(_tree(worker.pid)) == set(workers_before), "the worker's pool changed: measure again"
        growth_mib = max(_growth_mib(pid, before) for pid, before in workers_before.items())
        assert growth_mib < bound_mib, f"a worker process grew {growth_mib} MiB reading {size >> 20} MiB"
        print(f"{size >> 20} MiB: API grew {api_growth_mib} MiB, a worker at most {growth_mib} MiB; "
              f"upload {uploaded - started:.1f} s, process {time.monotonic() - uploaded:.1f} s")
        assert http.delete(f"/files/{stored['file_id']}").status_code == 204

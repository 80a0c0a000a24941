"""Large files: streamed uploads and process_file, with flat memory."""

from __future__ import annotations

import hashlib
import subprocess
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


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [pid] + [p for child in out.split() for p in _tree(int(child))]


def test_one_gib_file_with_flat_memory(client: httpx.Client, worker: subprocess.Popen[bytes],
                                       api_server: tuple[subprocess.Popen[bytes], str]) -> None:
    size, chunk = 1 << 30, b"12345,abcdefghij,ABCDEFGHIJKLMNOPQRST\n" * (1 << 14)  # ~640 KiB lines
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            digest.update(piece)
            sent += len(piece)
            yield piece

    stored = upload(client, body(), filename="big.csv")
    assert stored["size"] == size
    api_peak_mib = _peak_rss_kib(api_server[0].pid) // 1024
    assert api_peak_mib < 250, f"the API peaked at {api_peak_mib} MiB receiving a 1 GiB upload"
    task = wait(client, submit(client, "process_file", {"file_id": stored["file_id"]}), 120)
    assert task["state"] == "succeeded", task
    assert task["result"]["sha256"] == digest.hexdigest()
    assert task["result"]["csv"]["columns"] == ["12345", "abcdefghij", "ABCDEFGHIJKLMNOPQRST"]
    peak_mib = max(_peak_rss_kib(pid) for pid in _tree(worker.pid)) // 1024
    assert peak_mib < 250, f"a worker process peaked at {peak_mib} MiB for a 1 GiB file"
    print(f"1 GiB: API peak {api_peak_mib} MiB, worker peak {peak_mib} MiB")
    client.delete(f"/files/{stored['file_id']}")

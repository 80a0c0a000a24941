"""Large files: streamed uploads and process_file, with flat memory."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from .helpers import start_api, stop, submit, wait


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
    task = wait(client, submit(client, "process_file", {"file_id": "0" * 32}))
    assert task["state"] == "failed"
    assert task["error"]["type"] == "FileNotFoundError"
    assert "/" not in task["error"]["message"].replace("POST /files", "")  # no server path leaks


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

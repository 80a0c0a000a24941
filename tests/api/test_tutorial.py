"""The tutorial's endpoints against a real Valkey, a real API process and a real worker."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ..helpers import start_api, stop, wait_result

INT64_MAX = 2**63 - 1


def test_add_round_trip(client: httpx.Client) -> None:
    response = client.get("/add", params={"x": 1, "y": 2})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"task_id"}
    assert wait_result(client, body["task_id"]) == {"status": "completed", "result": 3}


def test_negative_and_large_operands(client: httpx.Client) -> None:
    task_id = client.get("/add", params={"x": -(2**62), "y": 2**62 - 5}).json()["task_id"]
    assert wait_result(client, task_id) == {"status": "completed", "result": -5}


def test_unknown_id_is_404_not_pending(client: httpx.Client) -> None:
    response = client.get("/result/does-not-exist")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "task_not_found"
    assert "does-not-exist" in error["message"]
    assert error["retryable"] is False


def test_failed_task_is_reported_failed_without_traceback(client: httpx.Client) -> None:
    task_id = client.get("/add", params={"x": INT64_MAX, "y": 1}).json()["task_id"]
    body = wait_result(client, task_id)
    assert body["status"] == "failed"
    assert "result" not in body
    error = body["error"]
    assert isinstance(error, dict)
    assert error["type"] == "OverflowError"
    assert "does not fit in a signed 64-bit integer" in error["message"]
    assert error["retryable"] is False
    raw = client.get(f"/result/{task_id}").text
    assert "Traceback" not in raw and "File \"" not in raw


@pytest.mark.parametrize(
    ("params", "field", "hint"),
    [
        ({"x": "a", "y": 2}, "'x'", "valid integer"),
        ({"x": 1}, "'y'", "Field required"),
        ({"x": 2**63, "y": 1}, "'x'", "less than or equal to 9223372036854775807"),
        ({"x": 1, "y": -(2**63) - 1}, "'y'", "greater than or equal to"),
    ],
)
def test_bad_input_is_422_naming_the_field(client: httpx.Client, params: dict[str, object],
                                           field: str, hint: str) -> None:
    response = client.get("/add", params=params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert f"query parameter {field}" in error["message"]
    assert hint in error["message"]


def test_queued_task_is_pending_across_api_restarts(redis_url: str, tmp_path: Path) -> None:
    """No worker consumes this queue: the task stays queued, and a fresh API process knows it."""
    queue = {"TASKGATE_DEFAULT_QUEUE": "nobody-consumes-this"}
    proc, base = start_api(redis_url, tmp_path / "first.log", **queue)
    try:
        task_id = httpx.get(base + "/add", params={"x": 1, "y": 2}).json()["task_id"]
        assert httpx.get(f"{base}/result/{task_id}").json() == {"status": "pending"}
    finally:
        stop(proc)
    proc, base = start_api(redis_url, tmp_path / "second.log", **queue)
    try:
        assert httpx.get(f"{base}/result/{task_id}").json() == {"status": "pending"}
        assert httpx.get(f"{base}/result/not-a-task").status_code == 404
    finally:
        stop(proc)


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"broker": "ok", "backend": "ok"}}


def test_openapi_documents_error_envelope(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    add = spec["paths"]["/add"]["get"]
    assert add["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse")
    assert "503" in add["responses"]
    assert "404" in spec["paths"]["/result/{task_id}"]["get"]["responses"]


def test_add_is_one_round_trip_without_pubsub(client: httpx.Client, redis_url: str) -> None:
    """What /add sends to Redis: one EVALSHA (record + index + LPUSH, atomically), never a
    SUBSCRIBE (the tutorial subscribes to every task's result channel)."""
    import time

    import redis

    client.get("/add", params={"x": 0, "y": 0})  # the API's first call loads the script
    with redis.Redis.from_url(redis_url) as conn, conn.monitor() as monitor:
        task_id = client.get("/add", params={"x": 20, "y": 22}).json()["task_id"]
        seen: list[dict[str, str]] = []
        deadline = time.monotonic() + 10
        while not any(i["command"].startswith("LPUSH") and task_id in i["command"] for i in seen):
            assert time.monotonic() < deadline, seen
            seen.append(monitor.next_command())
    mine = [i for i in seen if task_id in i["command"]]
    from_api = [i["command"].split()[0] for i in mine if i["client_type"] != "lua"]
    from_script = [i["command"].split()[0] for i in mine if i["client_type"] == "lua"]
    assert from_api in (["EVALSHA"], ["EVAL"]), mine
    # retry guard, record with its arguments (no TTL while it may run), the new task announced
    # on its channel (for live lists; nobody need listen), the history, the queue (auth off: the
    # anonymous owner needs no history of its own; no in-flight limit: no in-flight set); TIME,
    # for the deadline, names no task
    assert from_script == ["EXISTS", "HSET", "PUBLISH", "ZADD", "LPUSH"], mine
    assert not any("SUBSCRIBE" in i["command"] for i in mine)
    assert wait_result(client, task_id) == {"status": "completed", "result": 42}

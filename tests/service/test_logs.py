"""--log-format json: one JSON object per line, the task id carried from the API to the worker."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from ..helpers import start_api, start_worker, stop, submit, wait, wait_for


def json_lines(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_json_logs_carry_the_task_id(redis_url: str, tmp_path: Path) -> None:
    queue = {"TASKGATE_DEFAULT_QUEUE": f"logs-{tmp_path.name}", "TASKGATE_LOG_FORMAT": "json"}
    worker = start_worker(redis_url, tmp_path / "worker.log", **queue)
    api, base = start_api(redis_url, tmp_path / "api.log", level="info", **queue)
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            task_id = submit(client, "add", {"x": 2, "y": 3})
            assert wait(client, task_id)["state"] == "succeeded"

        def logged() -> bool:
            return any(line.get("task_id") == task_id and "succeeded" in str(line["message"])
                       for line in json_lines(tmp_path / "worker.log"))

        wait_for(logged, 10, "the worker's JSON line for the task")
    finally:
        stop(api)
        stop(worker)
    api_lines = json_lines(tmp_path / "api.log")
    accepted = [line for line in api_lines if line.get("task_id") == task_id]
    assert accepted and accepted[0]["logger"] == "taskgate.api" and accepted[0]["task"] == "add"
    assert any(line["logger"] == "uvicorn.access" for line in api_lines)
    worker_lines = [line for line in json_lines(tmp_path / "worker.log") if line.get("task_id") == task_id]
    assert {"ts", "level", "logger", "message"} <= set(worker_lines[0])
    text = (tmp_path / "worker.log").read_text().splitlines()
    assert sum(1 for line in text if line.startswith("[")) == 0, "non-JSON log lines from the worker"


def test_no_access_log_drops_every_per_request_line(redis_url: str, tmp_path: Path) -> None:
    api, base = start_api(redis_url, tmp_path / "api.log", level="info", args=("--no-access-log",),
                          TASKGATE_LOG_FORMAT="json")
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            task_ids = [submit(client, "add", {"x": 1, "y": i}) for i in range(3)]
            assert client.get("/add", params={"x": 1, "y": 2}).status_code == 200
    finally:
        stop(api)
    lines = json_lines(tmp_path / "api.log")
    assert lines, "the API logs its start"
    assert not [line for line in lines if line["logger"] == "uvicorn.access" or line.get("task_id") in task_ids]
    assert not [line for line in lines if "accepted" in str(line["message"])]

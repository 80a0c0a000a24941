"""--log-format json: one JSON object per line, the task id carried from the API to the worker,
and while tracing the trace id and span id of the span each line belongs to."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
from opentelemetry import trace

from taskgate.service.logs import JsonFormatter

from .. import otel
from ..helpers import (
    TASK_MODULES,
    env_for,
    free_port,
    start_api,
    start_worker,
    stop,
    submit,
    taskgate,
    wait,
    wait_for,
)


def json_lines(path: Path) -> list[dict[str, object]]:
    """The log lines of a process's output (not the spans OTEL_TRACES_EXPORTER=console writes)."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("{") and "logger" in (found := json.loads(line)):
            out.append(found)
    return out


def spans(path: Path) -> dict[str, dict[str, str]]:
    """The spans a process wrote with OTEL_TRACES_EXPORTER=console, by name: their ids in hex."""
    found = {}
    for line in path.read_text().splitlines():
        if line.startswith("{") and "context" in (span := json.loads(line)):
            found[span["name"]] = {name: value.removeprefix("0x") for name, value in span["context"].items()
                                   if name in ("trace_id", "span_id")}
            found[span["name"]]["service"] = span["resource"]["attributes"]["service.name"]
    return found


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


def test_flower_logs_json_lines_too(redis_url: str, tmp_path: Path) -> None:
    """Under ``up --log-format json`` Flower's lines (tornado's text format) were the only plain
    ones; its banner comes as JSON lines now."""
    log = tmp_path / "flower.log"
    proc = taskgate(["flower", f"--port={free_port()}"], env_for(redis_url, TASKGATE_LOG_FORMAT="json"), log)
    try:
        # "Registered tasks" is the banner's last line
        wait_for(lambda: proc.poll() is not None or any("Registered tasks" in str(line["message"])
                                                        for line in json_lines(log)), 30, "Flower's banner")
        assert proc.poll() is None, log.read_text()
    finally:
        stop(proc)
    text = [line for line in log.read_text().splitlines() if line.strip()]
    assert [line for line in text if not line.startswith("{")] == [], "non-JSON lines from Flower"
    assert any("Visit me at" in str(line["message"]) for line in json_lines(log))


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


def test_a_line_logged_in_a_span_carries_its_ids() -> None:
    formatter = JsonFormatter()
    line = logging.LogRecord("taskgate.test", logging.INFO, __file__, 1, "in %s", ("a span",), None)
    assert "trace_id" not in json.loads(formatter.format(line))  # no span: no ids
    with otel.in_memory():
        assert "trace_id" not in json.loads(formatter.format(line))
        with trace.get_tracer("test").start_as_current_span("work") as span:
            logged = json.loads(formatter.format(line))
        named = logging.LogRecord("taskgate.test", logging.INFO, __file__, 1, "named", (), None)
        named.trace_ids = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
        assert json.loads(formatter.format(named))["span_id"] == "b7ad6b7169203331"
    context = span.get_span_context()
    assert (logged["trace_id"], logged["span_id"]) == (f"{context.trace_id:032x}", f"{context.span_id:016x}")


def test_json_logs_of_a_traced_task_carry_its_trace(redis_url: str, tmp_path: Path) -> None:
    """TASKGATE_OTEL=on, the spans written to each process's output: the API's accepted line
    names the submit span, the line the task logs as it runs the worker's run span, both in the
    trace GET /tasks/{task_id} shows."""
    env = {"TASKGATE_DEFAULT_QUEUE": f"traced-logs-{tmp_path.name}", "TASKGATE_LOG_FORMAT": "json",
           "TASKGATE_TASK_MODULES": f"{TASK_MODULES},tests.service.chatty_tasks", "TASKGATE_OTEL": "on",
           "OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    worker = start_worker(redis_url, tmp_path / "worker.log", **env, OTEL_SERVICE_NAME="chatty-worker")
    api, base = start_api(redis_url, tmp_path / "api.log", level="info", **env)
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            task_id = submit(client, "chatty", {"message": "hello"})
            task = wait(client, task_id)
        assert task["state"] == "succeeded" and task["trace_id"]
        for log, name in (("worker.log", "taskgate run chatty"), ("api.log", "taskgate submit chatty")):
            wait_for(lambda: name in spans(tmp_path / log), 30, f"the span {name!r} written")  # noqa: B023
    finally:
        stop(api)
        stop(worker)
    (said,) = [line for line in json_lines(tmp_path / "worker.log") if line["message"] == "saying hello"]
    run = spans(tmp_path / "worker.log")["taskgate run chatty"]
    assert run["service"] == "chatty-worker"  # OTEL_SERVICE_NAME; else taskgate-<role>
    assert spans(tmp_path / "api.log")["taskgate submit chatty"]["service"] == "taskgate-api"
    assert said["task_id"] == task_id and said["logger"] == "tests.service.chatty_tasks"
    assert (said["trace_id"], said["span_id"]) == (task["trace_id"], run["span_id"]) == (run["trace_id"],
                                                                                        run["span_id"])
    (ended,) = [line for line in json_lines(tmp_path / "worker.log")  # Celery's, after the run's span
                if line.get("task_id") == task_id and "succeeded in" in str(line["message"])]
    assert ended["trace_id"] == task["trace_id"] and "span_id" not in ended
    (received,) = [line for line in json_lines(tmp_path / "worker.log")  # the main process's, before the run
                   if line.get("task_id") == task_id and "received" in str(line["message"])]
    assert (received["task"], received["trace_id"]) == ("taskgate.chatty", task["trace_id"])
    assert "span_id" not in received
    (accepted,) = [line for line in json_lines(tmp_path / "api.log") if line.get("task_id") == task_id]
    produced = spans(tmp_path / "api.log")["taskgate submit chatty"]
    assert "accepted chatty" in str(accepted["message"])
    assert (accepted["trace_id"], accepted["span_id"]) == (task["trace_id"], produced["span_id"])

"""The command line: every command explains itself, and a missing Redis says how to fix it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import taskgate

#: A data dir no `taskgate up` runs on (never created): a developer's `make run` in the repository
#: must not change what these commands answer.
NO_INSTANCE = str(Path(tempfile.gettempdir()) / "taskgate-test-cli-no-instance")


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    return subprocess.run([sys.executable, "-m", "taskgate", *args],
                          env={**clean, "TASKGATE_DATA_DIR": NO_INSTANCE, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ([], ["up", "api", "worker", "flower"]),
        (["up"], ["--host", "--port", "--flower-port", "--no-flower", "--concurrency", "--api-workers"]),
        (["api"], ["--host", "--port", "--workers"]),
        (["worker"], ["--concurrency"]),
        (["flower"], ["--host", "--port"]),
    ],
)
def test_help_lists_every_option(command: list[str], options: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    for option in options:
        assert option in result.stdout


@pytest.mark.parametrize("command", ["api", "worker", "flower"])
def test_component_without_redis_says_how_to_configure_it(command: str) -> None:
    result = run(command)
    assert result.returncode == 2
    assert "TASKGATE_REDIS_URL" in result.stderr
    assert "taskgate up" in result.stderr


def test_result_backend_must_be_redis() -> None:
    result = run("api", TASKGATE_REDIS_URL="redis://127.0.0.1:1/0",
                 TASKGATE_RESULT_BACKEND="db+postgresql://x")
    assert result.returncode == 2
    assert "TASKGATE_RESULT_BACKEND must be a Redis/Valkey URL" in result.stderr


def test_public_api_is_explicit() -> None:
    assert taskgate.__all__ == sorted(taskgate.__all__)
    for name in taskgate.__all__:
        assert hasattr(taskgate, name)


def test_an_empty_setting_is_unset() -> None:
    """`TASKGATE_REDIS_URL=` (as compose files leave it) means no Redis, not an empty URL."""
    result = run("worker", TASKGATE_REDIS_URL="", TASKGATE_MAX_DELIVERIES="")
    assert result.returncode == 2
    assert "no Redis configured" in result.stderr


def test_schedules_from_the_cli(own_redis_url: str) -> None:
    env = {"TASKGATE_REDIS_URL": own_redis_url}
    assert run("schedules", "list", **env).stdout.strip() == "no schedules"
    made = run("schedules", "add", "add", "--every", "60", "--args", '{"x": 1, "y": 2}', **env)
    assert made.returncode == 0, made.stderr
    schedule_id = made.stdout.split()[0]
    assert "add  every 60 s  next=" in made.stdout
    nightly = run("schedules", "add", "add", "--cron", "0 3 * * *", "--timezone", "Europe/Berlin",
                  "--args", '{"x": 1, "y": 2}', "--owner", "alice", "--paused", **env)
    assert "cron '0 3 * * *' (Europe/Berlin)  next=-  paused" in nightly.stdout, nightly.stdout
    listed = run("schedules", "list", "--json", **env).stdout.splitlines()
    assert {json.loads(line)["owner"] for line in listed} == {"anonymous", "alice"}
    assert "paused" in run("schedules", "pause", schedule_id, **env).stdout
    assert "paused" not in run("schedules", "resume", schedule_id, **env).stdout
    task_id = run("schedules", "run", schedule_id, **env).stdout.strip()
    assert len(task_id) == 36
    assert run("schedules", "delete", schedule_id, **env).stdout.strip() == f"deleted {schedule_id}"
    for bad, says in [(["add", "--every", "60"], "argument 'x': Field required"),
                      (["add", "--cron", "61 * * * *", "--args", '{"x": 1, "y": 2}'], "is not valid"),
                      (["add", "--every", "60", "--args", "[1]"], "--args must be a JSON object"),
                      (["nope", "--every", "60"], "no task named 'nope'")]:
        refused = run("schedules", "add", *bad, **env)
        assert refused.returncode != 0 and says in refused.stderr, (bad, refused.stderr)
    gone = run("schedules", "pause", schedule_id, **env)
    assert gone.returncode == 1 and f"no schedule with id {schedule_id!r}" in gone.stderr


@pytest.mark.parametrize("url", ["https://jaeger.example/trace/", "jaeger.example/trace/{trace_id}",
                                 "javascript:alert('{trace_id}')"])
def test_a_trace_url_must_be_http_and_name_the_trace_id(url: str) -> None:
    result = run("api", TASKGATE_REDIS_URL="redis://127.0.0.1:1/0", TASKGATE_TRACE_URL=url)
    assert result.returncode == 2
    assert "TASKGATE_TRACE_URL must be an http:// or https:// URL with {trace_id}" in result.stderr

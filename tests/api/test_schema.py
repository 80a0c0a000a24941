"""`schemathesis run --checks all` against a live API with a real worker, auth off and on: no
failure beyond those the README lists as intended (by check, and why)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import children, start_api, start_worker, stop
from .test_auth import new_key

#: Examples per operation and phase: bounded so both runs take well under a minute here (about
#: 13 s each on 2 cores).
MAX_EXAMPLES = 5
#: The endless event stream of a live task: covered by test_tasks.
#: And the endless feed of task changes (GET /events): covered by test_live.
SKIPPED_PATH = "^(/tasks/\\{task_id\\}/events|/events)$"
#: positive_data_acceptance is off (the README lists why, "schemathesis"): schema-valid requests
#: the API refuses by rules OpenAPI cannot state (countdown with eta, eta within 30 days).
#: A batch with one invalid item among valid ones is a 202 by design (each item answered in its
#: place), which negative_data_rejection counts as accepting a schema-violating request.
#: ``?wait=`` is held at 0: a fuzzed wait of up to 30 s on a task the fuzzed worker never gets to
#: (it runs fuzzed sleeps) only costs time; its validation is tested in test_input and test_tasks.
CONFIG = """
checks.positive_data_acceptance.enabled = false

[parameters]
"query.wait" = 0

[[operations]]
include-path-regex = "/batch$"
checks.negative_data_rejection.enabled = false
"""


@pytest.fixture
def schema_env(redis_url: str, smtp_server: tuple[object, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """Its own worker on its own queue (fuzzed sleeps and prime counts must not hold the session
    worker; killed at the end, whatever it still runs), with the built-in tasks and the README's."""
    env = {"TASKGATE_DEFAULT_QUEUE": f"schema-{tmp_path.name}", "TASKGATE_TASK_MODULES": "myapp.tasks",
           "TASKGATE_SMTP_URL": smtp_server[1]}
    worker = start_worker(redis_url, tmp_path / "worker.log", **env)
    yield env
    for pid in [worker.pid, *children(worker.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.wait()


def schemathesis(base: str, tmp_path: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config), "--no-color",
               "run", f"{base}/openapi.json", "--max-response-time", "45",
               "--exclude-path-regex", SKIPPED_PATH,  # every check runs by default, as --checks all
               "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--request-timeout", "40",
               "--seed", "1", "--suppress-health-check", "all",
               *[arg for header in headers for arg in ("--header", header)]]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "SCHEMATHESIS_HOOKS": ""})


@pytest.mark.parametrize("auth", ["off", "on"])
@pytest.mark.timeout(400)
def test_schemathesis_finds_nothing(redis_url: str, schema_env: dict[str, str], tmp_path: Path,
                                    auth: str) -> None:
    api, base = start_api(redis_url, tmp_path / "api.log", TASKGATE_AUTH=auth, **schema_env)
    try:
        headers = [f"Authorization: Bearer {new_key(redis_url, 'schema', admin=True)}"] if auth == "on" else []
        run = schemathesis(base, tmp_path, *headers)
    finally:
        stop(api)
    report = run.stdout + run.stderr
    print(report[-3000:])
    assert run.returncode == 0, report[-20000:]
    assert "No issues found" in report or " passed" in report, report[-3000:]

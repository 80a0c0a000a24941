"""The command line: every command explains itself, and a missing Redis says how to fix it."""

from __future__ import annotations

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
        (["up"], ["--host", "--port", "--flower-port", "--no-flower", "--concurrency"]),
        (["api"], ["--host", "--port"]),
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

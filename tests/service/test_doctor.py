"""taskgate doctor: problems found, each with its fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..helpers import OUTSIDE, env_for, start_valkey


def doctor(redis_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskgate", "doctor", *args],
                          env={**env_for(redis_url), **env}, capture_output=True, text=True, timeout=60, cwd=OUTSIDE)


def test_doctor_flags_redis_without_persistence_and_open_auth(own_redis_url: str) -> None:
    """On a Valkey of its own: the session's holds what other tests left (a task no worker has,
    which doctor rightly reports as a third problem)."""
    result = doctor(own_redis_url, "--host=0.0.0.0", TASKGATE_AUTH="off")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PROBLEM redis persistence: appendonly=no" in result.stdout
    assert "PROBLEM auth: API on 0.0.0.0: auth off" in result.stdout
    assert result.stdout.count("fix: ") == 2
    assert "2 problem(s)" in result.stdout


def test_doctor_passes_a_sound_setup(tmp_path: Path) -> None:
    server = start_valkey(tmp_path / "valkey", appendonly="yes")
    try:
        result = doctor(f"{server.connection_url}/0")
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout
    assert "ok      redis persistence: appendonly=yes" in result.stdout
    assert "0 problem(s)" in result.stdout

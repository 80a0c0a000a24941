"""taskgate doctor: problems found, each with its fix."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from redis import Redis

from taskgate.records import keys
from taskgate.records.workers import CATALOGUE_FRESH, CatalogueEntry, Heartbeat, encode_entry

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


def test_doctor_reports_only_tasks_a_running_api_sends(own_redis_url: str) -> None:
    """A worker consuming queue q lacks four tasks the catalogue lists for q: one an API
    republished just now, one no API republished within the window (its API was killed), one
    its API withdrew as it stopped, one an earlier version wrote (no published_at). Only the
    first is a problem."""
    client = Redis.from_url(own_redis_url)
    try:
        now = time.time()
        client.set(f"{keys.WORKER_PREFIX}host-a:1", Heartbeat(queues=("q",), tasks=("taskgate.add",), at=now).encode(),
                   ex=60)
        client.hset(keys.CATALOGUE, mapping={
            "taskgate.served": encode_entry(CatalogueEntry(module="app.served", queue="q"), now, "api-1"),
            "taskgate.stopped": encode_entry(CatalogueEntry(module="app.stopped", queue="q"),
                                             now - CATALOGUE_FRESH - 60, "api-0"),
            "taskgate.closed": encode_entry(CatalogueEntry(module="app.closed", queue="q"), now, "api-2",
                                            withdrawn=True),
            "taskgate.legacy": b'{"module": "app.legacy", "queue": "q"}',
        })
        result = doctor(own_redis_url)
    finally:
        client.close()
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("PROBLEM worker catalogue: worker host-a:1 lacks served, which a running API sends to the queues "
            "it consumes") in result.stdout, result.stdout
    assert "TASKGATE_TASK_MODULES including app.served\n" in result.stdout, result.stdout
    assert not {"stopped", "closed", "legacy"} & set(result.stdout.replace(",", " ").split()), result.stdout

"""``taskgate api --workers N``: N processes on one port, stopped together, metrics summed."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from ..helpers import env_for, free_port, kill, taskgate, wait_for
from .test_up import alive, cmdline, descendants

Api = tuple[subprocess.Popen[bytes], str, Path]


def start(redis_url: str, tmp_path: Path, *args: str, **extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """``taskgate api`` (on a free port) with ``args``, once /healthz answers."""
    base = f"http://127.0.0.1:{free_port()}"
    proc = taskgate(["api", f"--port={base.rsplit(':', 1)[1]}", "--log-level=info", "--no-access-log", *args],
                    env_for(redis_url, **extra), tmp_path / "api.log")

    def healthy() -> bool:
        assert proc.poll() is None, (tmp_path / "api.log").read_text()
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, 60, "API /healthz")
    return proc, base


def servers(parent: int) -> set[int]:
    """The API processes below ``parent``: uvicorn's spawned children (multiprocessing's
    resource tracker aside)."""
    return {pid for pid in descendants(parent) if "spawn_main" in cmdline(pid)}


def submits_by_pid(directory: Path) -> dict[int, float]:
    """``taskgate_tasks_submitted_total`` as each process wrote it in the multiprocess directory."""
    found: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        found[pid] = sum(value for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))
                         if '"taskgate_tasks_submitted_total"' in key)
    return found


def submits(base: str) -> float:
    """``taskgate_tasks_submitted_total{task="add"}`` in one GET /metrics, on a fresh connection."""
    text = httpx.get(base + "/metrics", timeout=10).text
    return next((sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                 if sample.name == "taskgate_tasks_submitted_total" and sample.labels == {"task": "add"}), 0.0)


@pytest.fixture
def api(own_redis_url: str, tmp_path: Path) -> Iterator[Api]:
    """``taskgate api --workers 2`` with its metrics directory in ``tmp_path/metrics``, where a
    file of an earlier run waits (it must not be counted)."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    stale = MmapedDict(str(directory / "counter_999999.db"))
    stale.write_value('["taskgate_tasks_submitted", "taskgate_tasks_submitted_total", {"task": "add"}, "old run"]', 1000.0, 0.0)
    stale.close()
    proc, base = start(own_redis_url, tmp_path, "--workers=2", PROMETHEUS_MULTIPROC_DIR=str(directory))
    try:
        yield proc, base, directory
    finally:
        for pid in [*descendants(proc.pid), proc.pid]:
            kill(pid, signal.SIGKILL)
        proc.wait()


def test_two_processes_answer_on_one_port_and_metrics_count_every_submit(api: Api, tmp_path: Path) -> None:
    proc, base, directory = api
    children = servers(proc.pid)
    assert len(children) == 2, [cmdline(pid) for pid in descendants(proc.pid)]
    made = 0

    def one_submit(_: int) -> None:
        answer = httpx.get(base + "/add", params={"x": 1, "y": 2}, timeout=10)  # a connection each
        assert answer.status_code == 200 and answer.json()["task_id"], answer.text

    def both_served() -> bool:
        nonlocal made
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(one_submit, range(32)))
        made += 32
        return all(submits_by_pid(directory).get(pid, 0) > 0 for pid in children)

    wait_for(both_served, 60, "both processes to accept submits", interval=0)
    by_pid = submits_by_pid(directory)
    assert set(by_pid) == children, (by_pid, children)  # the stale file was removed at start
    assert sum(by_pid.values()) == made
    # Whichever process answers the scrape, it counts every process's submits.
    assert [submits(base) for _ in range(10)] == [made] * 10

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, (tmp_path / "api.log").read_text()
    left = [cmdline(pid) for pid in children if alive(pid)]
    assert left == [], f"processes left behind: {left}"


def test_a_dead_process_is_replaced_and_a_killed_supervisor_leaves_none(api: Api) -> None:
    proc, base, _ = api
    first = servers(proc.pid)
    victim = min(first)
    httpx.get(base + "/add", params={"x": 1, "y": 2}, timeout=10)
    counted = submits(base)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(servers(proc.pid) - first) == 1 and len(servers(proc.pid)) == 2, 30,
             "a new API process in place of the killed one")
    wait_for(lambda: httpx.get(base + "/healthz", timeout=5).status_code == 200, 30, "the API to answer")
    assert submits(base) == counted, "a dead process's submits stay counted"

    children = servers(proc.pid)
    proc.kill()  # the supervisor dies without a word: each child has the parent-death signal
    proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in children), 30, "the API processes to stop")


def test_a_process_failing_at_startup_stops_them_all(own_redis_url: str, tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    proc = taskgate(["api", f"--port={free_port()}", "--workers=2"],
                    env_for(own_redis_url, TASKGATE_TASK_MODULES="no_such_tasks_module"), log)
    try:
        assert proc.wait(60) == 3, log.read_text()  # uvicorn's STARTUP_FAILURE, not a respawn loop
    finally:
        for pid in descendants(proc.pid):
            kill(pid, signal.SIGKILL)
        kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "taskgate: cannot start the API: No module named 'no_such_tasks_module'" in log.read_text()

"""A worker that lacks a task's module never drops its messages: it hands them back for a worker
that has it, and when no live worker has it the task fails truthfully and is dead-lettered.

Runs are counted by the task itself (``logged_sleep`` appends a line per start)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .. import rabbit
from ..helpers import env_for, start_api, start_worker, stop, submit, wait, wait_for

HOLD = 2.0  # consumer.UNKNOWN_HOLD


@pytest.fixture(scope="module")
def rabbit_url() -> Iterator[str]:
    if not rabbit.available():
        pytest.skip("rabbitmq-server is not installed (make test installs it)")
    node = rabbit.RabbitNode()
    node.start()
    yield node.url
    node.remove()


@pytest.fixture(params=["redis", "rabbitmq"])
def lane(request: pytest.FixtureRequest, own_redis_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """An API sending to a queue of this test's own, knowing the suite's tasks, with Redis or
    RabbitMQ as the broker: (base URL, env of its workers). On a Valkey of its own: the
    catalogue holds one queue per task name, and the session's APIs, republishing theirs every
    minute, would say the default queue."""
    env = {"TASKGATE_DEFAULT_QUEUE": f"unregistered-{tmp_path.name}"}
    if request.param == "rabbitmq":
        env["TASKGATE_BROKER_URL"] = request.getfixturevalue("rabbit_url")
    api, base = start_api(own_redis_url, tmp_path / "api.log", **env)
    yield base, env
    stop(api)


def runs(log: Path) -> list[str]:
    return sorted(line.split()[0] for line in log.read_text().splitlines()) if log.exists() else []


def test_a_worker_lacking_the_module_hands_tasks_to_one_that_has_it(
        own_redis_url: str, lane: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    base, env = lane
    lacking_log = tmp_path / "lacking.log"
    # An empty TASKGATE_TASK_MODULES is unset: this worker has the built-in tasks only.
    lacking = start_worker(own_redis_url, lacking_log, TASKGATE_TASK_MODULES="", **env)
    knowing = None
    try:
        log = tmp_path / "runs.log"
        with httpx.Client(base_url=base, timeout=10) as client:
            ids = [submit(client, "logged_sleep", {"log": str(log), "token": f"t{i}", "seconds": 0.05})
                   for i in range(5)]
            wait_for(lambda: b"is not registered on this worker" in lacking_log.read_bytes(), 30,
                     "the lacking worker to receive a task it does not know")
            assert [wait(client, task_id, 0.5)["state"] for task_id in ids] == ["queued"] * 5
            queues = {queue["name"]: queue for queue in client.get("/queues").json()}
            lane_queue = queues[env["TASKGATE_DEFAULT_QUEUE"]]
            (worker,) = lane_queue["workers"]
            # Every task the API sends to this queue but the worker lacks (not `lane`: another queue).
            assert lane_queue["lacking"] == {worker: [
                "async_busy_callbacks", "async_fan_out", "async_flaky", "async_soft_limited", "async_steps", "async_stray_cancel",
                "async_stubborn", "async_time_boxed", "async_where", "big_result", "boom", "counted", "expiring", "fan_out",
                "flaky", "gated",
                "logged_sleep", "make_invoice", "metered", "metered_per_customer", "numbers", "owner_header", "paired", "per_owner", "poison", "power",
                "retried_forever", "shared_fairly", "single_slot", "sleepy", "square", "stamped", "stubborn", "time_boxed",
                "total"]}
            doctor = subprocess.run([sys.executable, "-m", "taskgate", "doctor"], env=env_for(own_redis_url, **env),
                                    capture_output=True, text=True, timeout=60, cwd=tmp_path)
            assert doctor.returncode == 1, doctor.stdout
            assert f"PROBLEM worker catalogue: worker {worker} lacks" in doctor.stdout
            assert "TASKGATE_TASK_MODULES including myapp.tasks, tests.sample_tasks" in doctor.stdout, doctor.stdout
            knowing = start_worker(own_redis_url, tmp_path / "knowing.log", **env)
            ends = time.monotonic() + 60
            states = [wait(client, task_id, max(0.1, ends - time.monotonic()))["state"] for task_id in ids]
        # On failure, how often the lacking worker was handed each task (and lacking.log kept).
        handed = {task_id: lacking_log.read_text().count(f"[{task_id}] is not registered") for task_id in ids}
        assert states == ["succeeded"] * 5, (states, handed, tmp_path)
        assert runs(log) == [f"t{i}" for i in range(5)], "every task ran exactly once"
        assert b"Received unregistered task" not in lacking_log.read_bytes(), "Celery's drop path ran"
    finally:
        for proc in (knowing, lacking):
            if proc is not None:
                stop(proc)


def test_a_task_no_worker_has_fails_in_bounded_time_and_is_dead_lettered(
        own_redis_url: str, lane: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    base, env = lane
    timeout = 3
    lacking = start_worker(own_redis_url, tmp_path / "lacking.log", TASKGATE_TASK_MODULES="",
                           TASKGATE_UNREGISTERED_TIMEOUT=str(timeout), **env)
    try:
        log = tmp_path / "runs.log"
        with httpx.Client(base_url=base, timeout=10) as client:
            began = time.monotonic()
            ids = [submit(client, "logged_sleep", {"log": str(log), "token": f"t{i}", "seconds": 0})
                   for i in range(2)]
            records = [wait(client, task_id, 30) for task_id in ids]
            took = time.monotonic() - began
            letters = {letter["task_id"]: letter for letter in client.get("/dead-letters").json()["dead_letters"]}
        for record in records:
            assert record["state"] == "failed", record
            error = record["error"]
            assert error["type"] == "UnregisteredTask"
            assert "tests.sample_tasks" in error["message"] and "taskgate-" in error["message"]
            assert "'logged_sleep'" in error["message"]
        # Bounded: the timeout, plus at most one hold per worker and the heartbeat's age.
        assert timeout <= took < timeout + 2 * HOLD + 10, took
        for task_id in ids:
            assert letters[task_id]["reason"] == "unregistered"
            assert letters[task_id]["arguments"]["token"] in ("t0", "t1")
            # The error says how to requeue it; a requeued one gets the whole timeout again.
            assert "POST /dead-letters/{id}/requeue" in letters[task_id]["error"]["message"]
        with httpx.Client(base_url=base, timeout=10) as client:
            requeued = time.monotonic()
            assert client.post(f"/dead-letters/{ids[0]}/requeue").status_code == 200
            again = wait(client, ids[0], 30)
            assert again["state"] == "failed" and again["error"]["type"] == "UnregisteredTask", again
            assert time.monotonic() - requeued >= timeout
        assert runs(log) == [], "never ran"
    finally:
        stop(lacking)

"""RabbitMQ as the broker (results and records stay in Valkey): same endpoints, same truths."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .. import rabbit
from ..helpers import children, sse_events, start_api, start_worker, stop, submit, wait, wait_for, wait_result

pytestmark = pytest.mark.skipif(not rabbit.available(),
                                reason="rabbitmq-server is not installed (make test installs it)")


@pytest.fixture(scope="module")
def rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rabbit.RabbitNode]:
    node = rabbit.RabbitNode()
    node.start()
    yield node
    node.remove()


#: The queue of this module's worker and API: no other worker of the session consumes it.
QUEUE = "amqp-tests"


@pytest.fixture(scope="module")
def amqp_api(rabbit_node: rabbit.RabbitNode, redis_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("amqp")
    env = {"TASKGATE_BROKER_URL": rabbit_node.url, "TASKGATE_DEFAULT_QUEUE": QUEUE}
    worker = start_worker(redis_url, logs / "worker.log", **env)
    proc, base = start_api(redis_url, logs / "api.log", **env)
    yield base
    stop(proc)
    stop(worker)


def test_round_trip_through_rabbitmq(amqp_api: str) -> None:
    with httpx.Client(base_url=amqp_api, timeout=10) as client:
        assert client.get("/readyz").json()["checks"] == {"broker": "ok", "backend": "ok"}
        task_id = client.get("/add", params={"x": 4, "y": 5}).json()["task_id"]
        assert wait_result(client, task_id) == {"status": "completed", "result": 9}
        failed = client.get("/add", params={"x": 2**63 - 1, "y": 1}).json()["task_id"]
        assert wait_result(client, failed)["status"] == "failed"


def test_rabbitmq_down_gives_fast_503(redis_url: str, tmp_path: Path) -> None:
    node = rabbit.RabbitNode()
    node.start()
    proc, base = start_api(redis_url, tmp_path / "api.log", TASKGATE_BROKER_URL=node.url)
    try:
        assert httpx.get(base + "/add?x=1&y=2").status_code == 200
        node.stop()
        started = time.monotonic()
        response = httpx.get(base + "/add?x=1&y=2", timeout=10)
        seconds = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert seconds < 1.5, f"503 took {seconds:.2f}s"
        assert httpx.get(base + "/readyz", timeout=10).status_code == 503
    finally:
        stop(proc)
        node.remove()


def test_every_feature_on_rabbitmq(amqp_api: str, tmp_path: Path) -> None:
    """Typed submit, progress and SSE, cancel, retries, dead letters, delays and queues, with
    RabbitMQ as the broker."""
    with httpx.Client(base_url=amqp_api, timeout=10) as client:
        events = sse_events(client, f"/tasks/{submit(client, 'count_primes', {'limit': 20_000_000})}/events")
        assert events[-1]["data"]["result"] == 1_270_607  # type: ignore[index]
        assert wait(client, submit(client, "flaky", {"counter": str(tmp_path / "n"), "failures": 2}))["attempts"] == 3
        dead = submit(client, "flaky", {"counter": str(tmp_path / "m"), "failures": 99})
        assert wait(client, dead, 30)["state"] == "failed"
        assert dead in [d["task_id"] for d in client.get("/dead-letters").json()["dead_letters"]]
        delayed = submit(client, "add", {"x": 3, "y": 3}, countdown=2)
        task = wait(client, delayed, 20)
        assert task["result"] == 6
        queued = submit(client, "sleepy", {"seconds": 30, "started_file": str(tmp_path / "s")})
        wait_for((tmp_path / "s").exists, 20, "the task to start")
        client.post(f"/tasks/{queued}/cancel")
        assert wait(client, queued, 10)["state"] == "cancelled"
        def one_live_consumer() -> bool:  # a worker SIGKILLed by an earlier test beats for 10 s more
            depth = {q["name"]: q for q in client.get("/queues").json()}[QUEUE]
            return bool(depth["depth"] == 0 and len(depth["workers"]) == 1)

        wait_for(one_live_consumer, 30, "the queue to be empty with this test's one worker")


def test_killed_worker_task_finishes_on_the_other(rabbit_node: rabbit.RabbitNode, redis_url: str,
                                                 tmp_path: Path) -> None:
    """RabbitMQ redelivers a dead consumer's unacknowledged message at once: no reaper needed."""
    queue = f"rmq-{tmp_path.name}"
    env = {"TASKGATE_BROKER_URL": rabbit_node.url, "TASKGATE_DEFAULT_QUEUE": queue}
    first = start_worker(redis_url, tmp_path / "w1.log", **env)
    api, base = start_api(redis_url, tmp_path / "api.log", **env)
    log = tmp_path / "runs"
    second = None
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            # Long enough to outlast starting the second worker on a loaded machine (3 s did not).
            task_id = submit(client, "logged_sleep", {"log": str(log), "token": "t", "seconds": 10})
            wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 1, 20, "the task to start")
            second = start_worker(redis_url, tmp_path / "w2.log", **env)
            for pid in [first.pid, *children(first.pid)]:
                os.kill(pid, signal.SIGKILL)
            first.wait()
            assert wait(client, task_id, 0)["state"] == "started"  # killed while it ran
            task = wait(client, task_id, 40)
            assert task["state"] == "succeeded" and task["attempts"] == 2, task
            assert len(log.read_text().splitlines()) == 2
    finally:
        stop(api)
        if second is not None:
            stop(second)
        if first.poll() is None:
            stop(first)


def test_schedules_fire_through_rabbitmq(rabbit_node: rabbit.RabbitNode, own_redis_url: str, tmp_path: Path) -> None:
    """A keeper whose broker is RabbitMQ records the run (fire.lua), then publishes it; each
    run executes once (counted by the task). On a Valkey of its own: every worker of one Redis
    must share its broker, and the session's workers use Valkey's."""
    env = {"TASKGATE_BROKER_URL": rabbit_node.url, "TASKGATE_DEFAULT_QUEUE": f"sched-{tmp_path.name}"}
    worker = start_worker(own_redis_url, tmp_path / "worker.log", **env)
    proc, base = start_api(own_redis_url, tmp_path / "api.log", **env)
    log = tmp_path / "runs"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            made = client.post("/schedules", json={"task": "stamped", "arguments": {"log": str(log)}, "every": 1})
            schedule_id = made.json()["schedule_id"]

            def runs() -> list[dict[str, object]]:
                tasks: list[dict[str, object]] = client.get("/tasks", params={"schedule_id": schedule_id}).json()["tasks"]
                return tasks

            wait_for(lambda: sum(run["state"] == "succeeded" for run in runs()) >= 3, 30, "3 runs through RabbitMQ")
            client.post(f"/schedules/{schedule_id}/pause")
            wait_for(lambda: all(run["state"] == "succeeded" for run in runs()), 30, "the runs to end")
            starts = [line.split()[1] for line in log.read_text().splitlines() if line.startswith("start")]
            assert sorted(starts) == sorted(str(run["task_id"]) for run in runs())
    finally:
        stop(proc)
        stop(worker)


def test_a_workflow_runs_through_rabbitmq(amqp_api: str) -> None:
    """Released runs go through the outbox (the scripts cannot push to RabbitMQ): the roots at
    submit, a child when its parent's end releases it, a map's runs when it fans out."""
    with httpx.Client(base_url=amqp_api, timeout=10) as client:
        created = client.post("/workflows", json={"name": "amqp", "nodes": {
            "count": {"task": "numbers", "arguments": {"count": 4}},
            "squares": {"map": {"over": {"$result": "count"}, "task": "square", "argument": "n"}},
            "sum": {"task": "total", "arguments": {"values": {"$result": "squares"}}}}})
        assert created.status_code == 202, created.text
        body = created.json()
        assert wait(client, body["tasks"]["sum"], 60)["result"] == 0 + 1 + 4 + 9
        seen = client.get(f"/workflows/{body['workflow_id']}").json()
        assert (seen["state"], seen["result"]) == ("succeeded", 14)

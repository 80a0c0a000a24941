"""Scale out: several API replicas and workers sharing only Redis (and the broker)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .helpers import (
    env_for,
    happens,
    sse_events,
    start_api,
    start_valkey,
    start_worker,
    stop,
    submit,
    taskgate,
    wait,
    wait_for,
)


@pytest.fixture
def valkey_url(tmp_path: Path) -> Iterator[str]:
    server = start_valkey(tmp_path / "valkey")
    yield f"{server.connection_url}/0"
    server.stop()


def test_queues_route_tasks_to_their_workers(valkey_url: str, tmp_path: Path) -> None:
    general = start_worker(valkey_url, tmp_path / "general.log")
    slow = start_worker_with(valkey_url, tmp_path / "slow.log", "--queues=slowlane")
    api, base = start_api(valkey_url, tmp_path / "api.log")
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            routed = wait(client, submit(client, "lane", {"x": 21}))
            plain = wait(client, submit(client, "add", {"x": 1, "y": 1}))
            assert routed["state"] == plain["state"] == "succeeded"
            assert routed["worker"] != plain["worker"]
            queues = {q["name"]: q for q in client.get("/queues").json()}
            assert len(queues["slowlane"]["workers"]) == 1 and len(queues["celery"]["workers"]) == 1
            assert queues["slowlane"]["workers"] != queues["celery"]["workers"]
            assert queues["celery"]["depth"] == 0
    finally:
        stop(api)
        stop(slow)
        stop(general)


def start_worker_with(url: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """A worker with extra command-line options."""
    proc = taskgate(["worker", "--concurrency=2", *args], env_for(url), log)
    wait_for(lambda: b" ready." in log.read_bytes() or proc.poll() is not None, 60, "worker ready")
    assert proc.poll() is None, log.read_text()
    return proc


def test_two_apis_two_workers_one_system(valkey_url: str, tmp_path: Path) -> None:
    workers = [start_worker(valkey_url, tmp_path / f"w{i}.log") for i in range(2)]
    (a, base_a), (b, base_b) = (start_api(valkey_url, tmp_path / f"api{i}.log") for i in range(2))
    try:
        with httpx.Client(base_url=base_a, timeout=10) as api_a, httpx.Client(base_url=base_b, timeout=10) as api_b:
            ids = [(api_a if i % 2 else api_b).get("/add", params={"x": i, "y": 1}).json()["task_id"]
                   for i in range(2000)]
            tasks = [wait(api_b if i % 2 else api_a, task_id, 60) for i, task_id in enumerate(ids)]
            assert all(t["state"] == "succeeded" and t["attempts"] == 1 for t in tasks)
            assert [t["result"] for t in tasks] == [i + 1 for i in range(2000)]
            assert len({t["worker"] for t in tasks}) == 2, "both workers took tasks"

            # SSE on B for a task submitted on A.
            streamed = submit(api_a, "count_primes", {"limit": 50_000_000})
            events = sse_events(api_b, f"/tasks/{streamed}/events", timeout=60)
            assert events[-1]["data"]["state"] == "succeeded"  # type: ignore[index]

            # Cancel on B of a task queued (delayed) via A holds.
            delayed = submit(api_a, "add", {"x": 1, "y": 1}, countdown=3)
            assert api_b.post(f"/tasks/{delayed}/cancel").json()["state"] == "cancelled"
            assert not happens(lambda: api_a.get(f"/tasks/{delayed}").json()["started_at"] is not None,
                               within=4), "the cancelled delayed task started"

            # One idempotency key used on both replicas gives one task.
            key = {"Idempotency-Key": "order-7"}
            first = api_a.post("/tasks/add", json={"x": 7, "y": 7}, headers=key).json()["task_id"]
            again = api_b.post("/tasks/add", json={"x": 7, "y": 7}, headers=key)
            assert again.json()["task_id"] == first and again.headers["idempotent-replayed"] == "true"
    finally:
        stop(a)
        stop(b)
        for worker in workers:
            stop(worker)


def test_killing_an_api_replica_loses_no_accepted_task(valkey_url: str, tmp_path: Path) -> None:
    worker = start_worker(valkey_url, tmp_path / "w.log")
    a, base_a = start_api(valkey_url, tmp_path / "a.log")
    b, base_b = start_api(valkey_url, tmp_path / "b.log")
    accepted: list[str] = []
    stop_load = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=base_a, timeout=5) as client:
            while not stop_load.is_set():
                try:
                    response = client.get("/add", params={"x": 1, "y": 2})
                except httpx.TransportError:
                    continue
                if response.status_code == 200:
                    accepted.append(response.json()["task_id"])

    threads = [threading.Thread(target=load) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(accepted) >= 200, 30, "some load on replica A")
        a.kill()  # SIGKILL mid-load
        a.wait()
        time.sleep(0.5)
        stop_load.set()
        for thread in threads:
            thread.join()
        with httpx.Client(base_url=base_b, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
            tasks = [wait(client, task_id, 60) for task_id in accepted]
        assert all(task["state"] == "succeeded" for task in tasks), "an accepted task was lost"
    finally:
        stop_load.set()
        stop(b)
        stop(worker)

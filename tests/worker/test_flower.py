"""Flower tells what taskgate's records say: a task taskgate ends without running it ends there
too (cancelled or expired: REVOKED, announced once; dead-lettered at start: FAILURE, with why),
and a retry parked in taskgate's delayed set is announced as a retry.

A private Valkey, a real worker sending task events, the real API and a real Flower (its API
needs a password, so this Flower has one); nothing shared with the session's servers.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..helpers import env_for, free_port, start_api, start_valkey, stop, submit, taskgate, wait, wait_for

FLOWER_AUTH = ("flower", "test-only-password")


@dataclass
class Stack:
    redis_url: str
    api: str
    flower: str
    logs: Path


def start_events_worker(redis_url: str, log: Path, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    """A real ``taskgate worker --task-events``, returned once it is consuming."""
    proc = taskgate(["worker", "--task-events", *args], env_for(redis_url, **extra), log)
    wait_for(lambda: b" ready." in log.read_bytes() or proc.poll() is not None, 60, "worker ready")
    assert proc.poll() is None, log.read_text()
    return proc


def start_flower(redis_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A real ``taskgate flower`` on a free loopback port, returned once it answers."""
    port = free_port()
    proc = taskgate(["flower", f"--port={port}"],
                    env_for(redis_url, TASKGATE_FLOWER_BASIC_AUTH=":".join(FLOWER_AUTH)), log)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(f"{base}/healthcheck", auth=FLOWER_AUTH, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, 30, "Flower to answer")
    return proc, base


def flower_task(stack: Stack, task_id: str) -> dict[str, Any] | None:
    """What Flower's API knows of a task (from the event stream), None if nothing."""
    response = httpx.get(f"{stack.flower}/api/task/info/{task_id}", auth=FLOWER_AUTH, timeout=5)
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()
    return info


def wait_flower_state(stack: Stack, task_id: str, state: str, timeout: float = 20) -> dict[str, Any]:
    """Poll Flower until it shows the task in ``state``; fail naming the last state it showed."""
    seen: dict[str, Any] | None = None

    def reached() -> bool:
        nonlocal seen
        seen = flower_task(stack, task_id)
        return seen is not None and seen["state"] == state

    try:
        wait_for(reached, timeout, f"Flower to show {task_id} {state}", interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; Flower shows {seen and seen['state']}") from None
    assert seen is not None
    return seen


def revoked_events(stack: Stack, task_name: str, kind: str = "task-revoked") -> float:
    """How many ``kind`` events Flower has counted for tasks named ``task_name``."""
    metrics = httpx.get(f"{stack.flower}/metrics", auth=FLOWER_AUTH, timeout=5)
    assert metrics.status_code == 200, metrics.text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.text.splitlines()
               if line.startswith("flower_events_total{") and f'type="{kind}"' in line
               and f'task="{task_name}"' in line)


def settle(stack: Stack, client: httpx.Client) -> None:
    """Run a task through the worker and wait until Flower shows it done: the worker's events
    sent before it (a late duplicate included) have reached Flower by then."""
    task_id = client.get("/add", params={"x": 1, "y": 1}).json()["task_id"]
    wait_flower_state(stack, task_id, "SUCCESS")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Valkey, a worker of the default queue with task events on, the API and Flower. The
    worker dead-letters a task at its second delivery (TASKGATE_MAX_DELIVERIES=1)."""
    logs = tmp_path_factory.mktemp("flower")
    server = start_valkey(logs / "valkey")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        redis_url = f"{server.connection_url}/0"
        procs.append(start_events_worker(redis_url, logs / "worker.log", TASKGATE_MAX_DELIVERIES="1"))
        api, api_url = start_api(redis_url, logs / "api.log")
        procs.append(api)
        flower, flower_url = start_flower(redis_url, logs / "flower.log")
        procs.append(flower)
        ready = Stack(redis_url, api_url, flower_url, logs)
        # Flower captures events once its receiver is connected: until then tasks pass unseen.
        with httpx.Client(base_url=api_url, timeout=10) as client:
            probes: list[str] = []

            def flower_sees_tasks() -> bool:
                probes.append(client.get("/add", params={"x": 1, "y": 2}).json()["task_id"])
                return any(flower_task(ready, task_id) is not None for task_id in probes)

            wait_for(flower_sees_tasks, 60, "Flower to see the worker's task events", interval=0.5)
        yield ready
    finally:
        for proc in reversed(procs):
            stop(proc)
        server.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api, timeout=10) as http:
        yield http


def test_a_running_task_cancelled_ends_revoked_in_flower(stack: Stack, client: httpx.Client) -> None:
    before = revoked_events(stack, "taskgate.sleepy")
    task_id = submit(client, "sleepy", {"seconds": 60})
    wait_flower_state(stack, task_id, "STARTED")
    assert client.post(f"/tasks/{task_id}/cancel").status_code == 200
    assert wait(client, task_id, 20)["state"] == "cancelled"
    shown = wait_flower_state(stack, task_id, "REVOKED")
    assert shown["name"] == "taskgate.sleepy" and shown["revoked"], shown
    settle(stack, client)
    assert revoked_events(stack, "taskgate.sleepy") - before == 1


def test_tasks_cancelled_or_expired_while_queued_end_revoked_once_a_worker_takes_them(
        stack: Stack, client: httpx.Client) -> None:
    # `lane` goes to the `slowlane` queue, which no worker consumes yet.
    cancelled = submit(client, "lane", {"x": 1})
    assert client.post(f"/tasks/{cancelled}/cancel").json()["state"] == "cancelled"
    expired = submit(client, "lane", {"x": 2}, expires=1)
    assert wait(client, expired, 20)["state"] == "expired"  # ended by the keeper, still queued
    # Flower learns of a task only from a worker's events (taskgate sends no task-sent event).
    assert flower_task(stack, cancelled) is None and flower_task(stack, expired) is None
    lane = start_events_worker(stack.redis_url, stack.logs / "slowlane.log", "--queues=slowlane",
                               "--concurrency=1")
    try:
        # The worker receives and starts each, finds it ended and skips it: Flower's last word
        # on it must be REVOKED, not STARTED.
        for task_id, state in ((cancelled, "cancelled"), (expired, "expired")):
            shown = wait_flower_state(stack, task_id, "REVOKED")
            assert shown["name"] == "taskgate.lane" and shown["received"] and shown["revoked"], shown
            assert client.get(f"/tasks/{task_id}").json()["state"] == state
    finally:
        stop(lane)


def test_a_task_dead_lettered_at_start_ends_failed_with_why(
        stack: Stack, client: httpx.Client, tmp_path: Path) -> None:
    # `poison` kills the process running it; the worker requeues it, and at its second delivery
    # (TASKGATE_MAX_DELIVERIES=1) dead-letters it without running it.
    starts, kill = tmp_path / "starts.log", tmp_path / "kill"
    kill.touch()
    task_id = submit(client, "poison", {"log": str(starts), "kill_file": str(kill)})
    body = wait(client, task_id, 60)
    assert body["state"] == "failed" and body["error"]["type"] == "WorkerLostError", body
    assert len(starts.read_text().splitlines()) == 1  # it ran once, and not at the delivery that ended it
    shown = wait_flower_state(stack, task_id, "FAILURE")  # not STARTED forever
    assert shown["name"] == "taskgate.poison" and shown["failed"], shown
    assert shown["exception"] == f"WorkerLostError({body['error']['message']!r})", shown
    dead = client.get("/dead-letters").json()["dead_letters"]
    assert any(one["task_id"] == task_id and one["reason"] == "max_deliveries" for one in dead), dead


def test_a_parked_retry_is_announced_as_a_retry(stack: Stack, client: httpx.Client, tmp_path: Path) -> None:
    # `flaky` fails transiently once; its retry waits in taskgate's delayed set, not in Celery.
    before = revoked_events(stack, "taskgate.flaky", "task-retried")
    task_id = submit(client, "flaky", {"counter": str(tmp_path / "counter"), "failures": 1})
    assert wait(client, task_id, 20)["state"] == "succeeded"
    shown = wait_flower_state(stack, task_id, "SUCCESS")
    assert shown["retried"] and shown["exception"] == "Flaky('transient failure 1 of 1')", shown
    settle(stack, client)
    assert revoked_events(stack, "taskgate.flaky", "task-retried") - before == 1


def test_a_terminated_task_is_announced_revoked_once(stack: Stack, client: httpx.Client) -> None:
    # terminate=true also raises the cooperative flag: whichever stops `sleepy` first, the
    # worker announces it revoked once (Celery itself does when it terminates the process).
    before = revoked_events(stack, "taskgate.sleepy")
    task_id = submit(client, "sleepy", {"seconds": 60})
    wait_flower_state(stack, task_id, "STARTED")
    assert client.post(f"/tasks/{task_id}/cancel", params={"terminate": "true"}).status_code == 200
    assert wait(client, task_id, 20)["state"] == "cancelled"
    wait_flower_state(stack, task_id, "REVOKED")
    settle(stack, client)
    assert revoked_events(stack, "taskgate.sleepy") - before == 1

"""``GET /events``: the caller's tasks as they change, from a real API and worker. A submitted
task appears and its state follows; many changes come coalesced in few batches; another owner's
tasks never appear."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from ..helpers import wait_for
from .test_auth import bearer, new_key


@contextmanager
def feed(base: str, path: str = "/events", headers: dict[str, str] | None = None) -> Iterator[list[tuple[float, list[dict[str, Any]]]]]:
    """Read the stream on a thread; yields the batches read so far (time, tasks), once live."""
    batches: list[tuple[float, list[dict[str, Any]]]] = []
    stop = threading.Event()

    http = httpx.Client(base_url=base, timeout=60)

    def read() -> None:
        try:
            with http.stream("GET", path, headers=headers) as answer:
                assert answer.status_code == 200
                for line in answer.iter_lines():
                    if line.startswith("data:"):
                        batches.append((time.monotonic(), json.loads(line[5:])))
        except (httpx.HTTPError, RuntimeError):
            if not stop.is_set():  # closed by the test, or it is a failure
                raise

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: bool(batches), 20, "the feed to be live (its first, empty batch)")
        yield batches
    finally:
        stop.set()
        http.close()  # ends the stream: the reader returns
        reader.join(10)


def seen(batches: list[tuple[float, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for _, tasks in list(batches):
        for task in tasks:
            latest[task["task_id"]] = task
    return latest


def test_a_submitted_task_appears_and_follows_its_state(api_url: str, worker: subprocess.Popen[bytes]) -> None:
    with feed(api_url) as batches, httpx.Client(base_url=api_url, timeout=10) as http:
        task_id = http.post("/tasks/sleepy", json={"seconds": 1.5}).json()["task_id"]
        # it runs 1.5 s: the feed shows it running before it shows it done
        wait_for(lambda: seen(batches).get(task_id, {}).get("state") == "started", 20, "the task to show started")
        wait_for(lambda: seen(batches).get(task_id, {}).get("state") == "succeeded", 20, "the task to succeed")
        task = seen(batches)[task_id]
        assert task["result"] == 1.5 and task["arguments"] == {"seconds": 1.5, "started_file": ""}


def test_many_changes_come_coalesced_in_few_batches(api_url: str, worker: subprocess.Popen[bytes]) -> None:
    with feed(api_url, "/events?name=add") as batches, httpx.Client(base_url=api_url, timeout=30) as http:
        began = time.monotonic()
        made = http.post("/tasks/add/batch", json={"items": [{"x": i, "y": 1} for i in range(300)]}).json()
        ids = {item["task_id"] for item in made["tasks"]}
        wait_for(lambda: all(seen(batches).get(task_id, {}).get("state") == "succeeded" for task_id in ids), 60,
                 "every task of the batch to show succeeded")
        took = time.monotonic() - began
        during = [at for at, tasks in batches if at >= began and tasks]
        # 300 tasks make 900 changes (queued, started, succeeded): at most 4 batches a second
        # counted where they arrive (a gap between two arrivals also holds the client's jitter)
        assert len(during) <= 4 * took + 2, (len(during), took)


def test_other_owners_tasks_never_appear(secured: str, redis_url: str, worker: subprocess.Popen[bytes]) -> None:
    alice, bob = new_key(redis_url, "alice-live"), new_key(redis_url, "bob-live")
    with feed(secured, headers=bearer(alice)) as batches, httpx.Client(base_url=secured, timeout=10) as http:
        bobs = http.post("/tasks/add", json={"x": 1, "y": 1}, headers=bearer(bob)).json()["task_id"]
        alices = http.post("/tasks/add", json={"x": 2, "y": 2}, headers=bearer(alice)).json()["task_id"]
        wait_for(lambda: seen(batches).get(alices, {}).get("state") == "succeeded", 20, "alice's task")
        wait_for(lambda: http.get(f"/tasks/{bobs}", headers=bearer(bob)).json()["state"] == "succeeded", 20,
                 "bob's task")
        assert bobs not in seen(batches)
        assert {task["owner"] for task in seen(batches).values()} == {"alice-live"}
    assert httpx.get(secured + "/events", timeout=5).status_code == 401

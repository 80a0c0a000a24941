"""GET /metrics of ``taskgate api --workers 2`` against a real worker: every scrape, whichever
process answers it, says the same numbers, and the histograms place each run as its record's
times do."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskgate.constants import LATENCY_BUCKETS

from ..helpers import Stack, start_api, stop, wait

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
#: Families that change only when tasks are submitted or end (not with every scrape).
STEADY = ("taskgate_tasks_submitted_total", "taskgate_tasks_total", "taskgate_queue_wait_seconds",
          "taskgate_task_runtime_seconds", "taskgate_queue_depth", "taskgate_delayed_tasks",
          "taskgate_dead_letters", "taskgate_workers", "taskgate_worker_concurrency")
#: Far from every bucket bound a run can land near, on a stored time in whole milliseconds.
EPSILON = 1e-6


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private Valkey, one worker (concurrency 2) and ``taskgate api --workers 2`` with no
    PROMETHEUS_MULTIPROC_DIR (its supervisor makes a temporary one): the API's base URL."""
    stack = Stack(tmp_path_factory.mktemp("metrics"))
    stack.start_valkey()
    api: subprocess.Popen[bytes] | None = None
    try:
        stack.start_worker()
        api, base = start_api(stack.url, stack.tmp / "api.log", args=("--workers=2", "--no-access-log"))
        yield base
    finally:
        if api is not None:
            stop(api)
        stack.close()


def scrape(base: str) -> Samples:
    """One GET /metrics on a fresh connection (the kernel gives it to either process)."""
    response = httpx.get(base + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def steady(samples: Samples) -> Samples:
    return {key: value for key, value in samples.items() if key[0].startswith(STEADY)}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(value for (found, have), value in samples.items()
               if found == name and set(labels.items()) <= set(have))


def spans(record: dict[str, Any]) -> tuple[float, float]:
    """(queue wait, run time) in seconds, from a record's times."""
    created, started, finished = (datetime.fromisoformat(record[f]) for f in
                                  ("created_at", "started_at", "finished_at"))
    return (started - created).total_seconds(), (finished - started).total_seconds()


def assert_placed(samples: Samples, name: str, task: str, observed: list[float]) -> None:
    """``name``'s histogram for ``task`` holds exactly ``observed``: each bucket counts the values
    at or below its bound (a value within EPSILON of a bound may fall either side)."""
    for bound in LATENCY_BUCKETS:
        count = samples[(f"{name}_bucket", (("le", str(bound)), ("task", task)))]
        assert sum(v <= bound - EPSILON for v in observed) <= count <= sum(v <= bound + EPSILON for v in observed), \
            (name, task, bound, count, sorted(observed))
    assert samples[(f"{name}_bucket", (("le", "+Inf"), ("task", task)))] == len(observed)
    assert samples[(f"{name}_count", (("task", task),))] == len(observed)
    assert samples[(f"{name}_sum", (("task", task),))] == pytest.approx(sum(observed), abs=0.01)


def test_every_process_answers_the_same_counts_of_what_was_submitted_and_ran(multi: str) -> None:
    # Each submit on a connection of its own: the two processes share them.
    jobs = {"add": [httpx.post(f"{multi}/tasks/add", json={"x": 1, "y": n}, timeout=10) for n in range(6)],
            "sleepy": [httpx.post(f"{multi}/tasks/sleepy", json={"seconds": 0.3}, timeout=10) for _ in range(3)]}
    jobs["sleepy"] += [httpx.post(f"{multi}/tasks/sleepy", json={"seconds": 1.2}, params={"countdown": 1},
                                  timeout=10) for _ in range(2)]
    assert all(response.status_code == 202 for answers in jobs.values() for response in answers)
    submitted = sum(len(answers) for answers in jobs.values())
    with httpx.Client(base_url=multi, timeout=40) as client:
        records = {task: [wait(client, r.json()["task_id"], 60) for r in answers] for task, answers in jobs.items()}
    assert all(record["state"] == "succeeded" for ended in records.values() for record in ended)

    scrapes = [scrape(multi) for _ in range(12)]
    first = steady(scrapes[0])
    assert all(steady(other) == first for other in scrapes[1:]), "two processes answered differently"
    assert total(first, "taskgate_tasks_submitted_total") == submitted
    assert total(first, "taskgate_tasks_submitted_total", task="sleepy") == 5
    assert total(first, "taskgate_tasks_total") == submitted
    assert total(first, "taskgate_tasks_total", state="succeeded") == submitted
    assert first[("taskgate_tasks_total", (("state", "succeeded"), ("task", "add")))] == 6
    assert total(first, "taskgate_task_runtime_seconds_count") == submitted
    assert total(first, "taskgate_queue_wait_seconds_count") == submitted
    assert first[("taskgate_workers", ())] == 1
    assert total(first, "taskgate_worker_concurrency") == 2
    assert first[("taskgate_queue_depth", (("queue", "celery"),))] == 0
    assert first[("taskgate_delayed_tasks", ())] == 0 and first[("taskgate_dead_letters", ())] == 0
    assert all(scrape_[("taskgate_redis_call_seconds_count", ())] > 0 for scrape_ in scrapes)


def test_histograms_place_each_run_as_its_record_times_it(multi: str) -> None:
    # Runs of its own (it may run without the first test), and the first test's when it ran
    # before (module fixture): every record of each task is read.
    with httpx.Client(base_url=multi, timeout=40) as client:
        ids = [client.post("/tasks/sleepy", json={"seconds": 0.6}).json()["task_id"] for _ in range(2)]
        ids += [client.post("/tasks/add", json={"x": 1, "y": n}).json()["task_id"] for n in range(3)]
        records = [wait(client, task_id, 60) for task_id in ids]
        assert all(record["state"] == "succeeded" for record in records)
        listed = client.get("/tasks", params={"limit": 100}).json()
    everything = [record for record in listed["tasks"] if record["state"] == "succeeded"]
    samples = scrape(multi)
    for task in ("add", "sleepy"):
        mine = [spans(record) for record in everything if record["name"] == task]
        assert len(mine) == total(samples, "taskgate_tasks_total", task=task)
        assert_placed(samples, "taskgate_queue_wait_seconds", task, [wait_ for wait_, _ in mine])
        assert_placed(samples, "taskgate_task_runtime_seconds", task, [run for _, run in mine])
    # What the tasks did sets lower bounds no load can break: a sleepy slept at least 0.3 s, and
    # two of them waited at least a 1 s countdown.
    assert samples[("taskgate_task_runtime_seconds_bucket", (("le", "0.25"), ("task", "sleepy")))] == 0
    assert samples[("taskgate_queue_wait_seconds_bucket", (("le", "0.5"), ("task", "sleepy")))] <= 5

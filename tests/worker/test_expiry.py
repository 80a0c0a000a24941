"""Expiry end to end, with real workers: a run not started by its expiry never runs, whether it
waited delayed, retrying, in a queue no worker consumes, or in a queue a worker takes it from
too late; it ends ``expired``, as ``GET /tasks/{id}``, ``GET /result/{id}``, the history filter
and ``job.result()`` say. Executions are counted in the task (a line per start)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from redis import Redis

import taskgate
from taskgate.api import errors
from taskgate.records import keys
from taskgate.records.workers import heartbeats

from .. import sample_tasks
from ..helpers import Stack, lines, submit, wait, wait_for, with_gate
from .admitted import starts


@pytest.fixture
def valkey_client(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


def expiry_of(redis: Redis, task_id: str) -> float:
    """The expiry submit wrote into the record, in seconds."""
    stored = redis.hget(keys.record(task_id), "expires_at")
    assert stored is not None, "submit writes expires_at"
    assert redis.zscore(keys.EXPIRING, task_id) == pytest.approx(int(stored) / 1000, abs=0.002)
    return int(stored) / 1000


def assert_expired(task: dict[str, Any]) -> None:
    assert task["state"] == "expired", task
    assert task["started_at"] is None or task["timeline"][-2]["state"] != "started"
    assert task["finished_at"] is not None and task["expires_at"] is not None
    assert task["error"]["type"] == "Expired" and task["error"]["retryable"] is False
    assert "not started before its expiry" in task["error"]["message"]


def test_a_delayed_run_expires_before_it_is_due(client: httpx.Client, valkey_client: Redis,
                                                tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    before = time.time()
    task_id = submit(client, "logged_sleep", {"log": str(log), "token": "t", "seconds": 0},
                     countdown=30, expires=0.5)
    expires_at = expiry_of(valkey_client, task_id)
    assert before + 0.5 <= expires_at <= time.time() + 0.5
    task = wait(client, task_id, 15)
    assert_expired(task)
    assert [change["state"] for change in task["timeline"]] == ["queued", "expired"]
    assert lines(log) == [], "never ran"
    assert valkey_client.zscore(keys.DELAYED, task_id) is None, "no longer waits to be released"
    assert valkey_client.zscore(keys.EXPIRING, task_id) is None
    # the tutorial's view and the history filter
    assert client.get(f"/result/{task_id}").json() == {"status": "expired", "error": task["error"]}
    listed = client.get("/tasks", params={"state": "expired", "name": "logged_sleep"}).json()["tasks"]
    assert task_id in [one["task_id"] for one in listed]
    assert all(one["state"] == "expired" for one in listed)
    assert task_id not in [one["task_id"] for one in client.get(
        "/tasks", params={"state": "queued", "name": "logged_sleep"}).json()["tasks"]]


def test_a_retrying_run_expires_and_never_runs_after_its_expiry(client: httpx.Client, valkey_client: Redis,
                                                                tmp_path: Path) -> None:
    """It fails transiently, waits up to 5 s for each retry: the expiry comes while it waits."""
    log = tmp_path / "runs.log"
    task_id = submit(client, "retried_forever", {"log": str(log)}, expires=1)
    expires_at = expiry_of(valkey_client, task_id)
    task = wait(client, task_id, 20)
    assert_expired(task)
    starts = [float(line) for line in lines(log)]
    assert starts and max(starts) < expires_at, (starts, expires_at)
    assert task["attempts"] == len(starts)
    assert task["timeline"][-2]["state"] == "retrying", task["timeline"]
    assert valkey_client.zscore(keys.DELAYED, task_id) is None


def test_the_sweep_ends_a_queued_run_no_worker_takes(client: httpx.Client, valkey_client: Redis) -> None:
    """`lane` goes to `slowlane`, which the session's worker does not consume."""
    task_id = submit(client, "lane", {"x": 1}, expires=0.5)
    try:
        expires_at = expiry_of(valkey_client, task_id)
        task = wait(client, task_id, 15)
        assert_expired(task)
        assert task["started_at"] is None and task["attempts"] == 0
        assert task["finished_at"] >= task["expires_at"]
        assert time.time() >= expires_at
        assert client.get(f"/result/{task_id}").json()["status"] == "expired"
    finally:  # its message stays in slowlane (a worker taking it skips it: see the next test)
        for message in valkey_client.lrange("slowlane", 0, -1):
            if task_id.encode() in message:
                valkey_client.lrem("slowlane", 0, message)


def test_a_message_taken_after_its_expiry_never_runs(stack: Stack, tmp_path: Path) -> None:
    """The message waits in the queue past its expiry (no worker yet) and the sweep is taken out
    of the way: only START stands between it and a late run."""
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    try:
        log = tmp_path / "runs.log"
        late = submit(client, "logged_sleep", {"log": str(log), "token": "late", "seconds": 0}, expires=0.5)
        on_time = submit(client, "logged_sleep", {"log": str(log), "token": "on-time", "seconds": 0},
                         expires=600)
        expires_at = expiry_of(redis, late)
        assert redis.llen("celery") == 2
        wait_for(lambda: time.time() > expires_at + 0.1, 5, "the expiry to pass")
        redis.zrem(keys.EXPIRING, late)  # no sweep: the worker must refuse it itself
        stack.start_worker()
        assert wait(client, on_time, 30)["state"] == "succeeded"
        task = wait(client, late, 30)
        assert_expired(task)
        assert [line.split()[0] for line in lines(log)] == ["on-time"], "the late one never ran"
        wait_for(lambda: redis.llen("celery") == 0 and redis.hlen(keys.KOMBU_UNACKED) == 0, 15,
                 "both messages taken and acknowledged")
        assert redis.hget(keys.STATS, "done:logged_sleep:expired") == b"1"
    finally:
        redis.close()


def test_a_task_declared_with_expires_gives_its_runs_that_expiry(client: httpx.Client, valkey_client: Redis,
                                                                  tmp_path: Path) -> None:
    """`expiring` is declared with @taskgate.task(expires=1): a run submitted without an expiry
    gets one 1 s after its submission and, delayed past it, ends expired unrun; `?expires=`
    replaces the declared one."""
    log = tmp_path / "runs.log"
    before = time.time()
    late = submit(client, "expiring", {"log": str(log), "token": "late"}, countdown=30)
    expires_at = expiry_of(valkey_client, late)
    assert before + 1 <= expires_at <= time.time() + 1
    batch = client.post("/tasks/expiring/batch", json={"items": [{"log": str(log), "token": "batched"}]})
    assert batch.status_code == 202, batch.text
    (batched,) = [item["task_id"] for item in batch.json()["tasks"]]
    assert before + 1 <= expiry_of(valkey_client, batched) <= time.time() + 1, "a batch's runs get it too"
    on_time = submit(client, "expiring", {"log": str(log), "token": "on-time"}, expires=600)
    assert expiry_of(valkey_client, on_time) >= before + 600, "?expires= replaces the declared expiry"
    assert_expired(wait(client, late, 15))
    assert wait(client, on_time, 15)["state"] == "succeeded"
    # the batched run is queued at once: it runs if the worker takes it within its second
    ran = wait(client, batched, 15)["state"]
    assert ran in ("succeeded", "expired")
    assert sorted(lines(log)) == (["batched", "on-time"] if ran == "succeeded" else ["on-time"]), \
        "the expired ones never ran"


def test_a_message_in_a_workers_buffer_past_its_expiry_never_runs(stack: Stack) -> None:
    """TASKGATE_WORKER_PREFETCH=2, concurrency 2: two held runs fill the pool, and the worker
    takes the next two messages into its buffer (out of the queue, named by its heartbeat), one
    expiring there. The sweep is taken out of the way: when the pool frees, START refuses the
    late one, never run, and the on-time one beside it runs."""
    stack.start_worker(TASKGATE_WORKER_PREFETCH="2")
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    try:
        log, hold = stack.tmp / "runs", stack.tmp / "hold"
        hold.touch()
        holders = [submit(client, "gated", {"log": str(log), "token": f"h{i}", "hold": str(hold)})
                   for i in range(2)]
        wait_for(lambda: starts(log) == {"h0": 1, "h1": 1}, 20, "the pool to be busy")
        late = submit(client, "gated", {"log": str(log), "token": "late"}, expires=3)
        redis.zrem(keys.EXPIRING, late)  # no sweep: the worker must refuse it itself
        on_time = submit(client, "gated", {"log": str(log), "token": "on-time"}, expires=600)
        expires_at = int(redis.hget(keys.record(late), "expires_at") or 0) / 1000
        wait_for(lambda: redis.llen("celery") == 0, 10, "the worker to take both messages")
        assert time.time() < expires_at, "taken into the buffer before its expiry"
        wait_for(lambda: sum(len(beat.tags) for beat in heartbeats(redis).values()) == 4, 10,
                 "the worker's heartbeat to name the 4 messages it holds (2 running, 2 in its buffer)")
        wait_for(lambda: time.time() > expires_at + 0.2, 5, "the expiry to pass in the buffer")
        assert client.get(f"/tasks/{late}").json()["state"] == "queued", "nothing but START ends it"
        assert set(starts(log)) == {"h0", "h1"}
        hold.unlink()
        task = wait(client, late, 30)
        assert_expired(task)
        assert task["started_at"] is None and task["attempts"] == 0
        assert [wait(client, task_id, 30)["state"] for task_id in [*holders, on_time]] == ["succeeded"] * 3
        assert starts(log) == {"h0": 1, "h1": 1, "on-time": 1}, "the late one never ran"
        wait_for(lambda: redis.hlen(keys.KOMBU_UNACKED) == 0, 15, "every message acknowledged")
        assert redis.hget(keys.STATS, "done:gated:expired") == b"1"
        # counted as expired where ended tasks are counted
        assert 'taskgate_tasks_total{state="expired",task="gated"} 1.0' in client.get("/metrics").text
        summary = client.get("/summary").json()
        assert summary["last_hour"]["expired"] == 1 and sum(minute["expired"] for minute in summary["minutes"]) == 1
    finally:
        redis.close()


@pytest.mark.parametrize("expires", ["0", "-1", "nan", "inf", "-inf", "2592001", "1e999", "soon", ""])
def test_a_bad_expires_is_refused_naming_it(client: httpx.Client, expires: str) -> None:
    response = client.post("/tasks/add", json={"x": 1, "y": 2}, params={"expires": expires})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "query parameter 'expires'" in error["message"], error
    assert [problem["loc"] for problem in error["errors"]] == [["query", "expires"]]


def test_expires_is_documented_on_the_submit_routes(client: httpx.Client) -> None:
    parameters = client.get("/openapi.json").json()["paths"]["/tasks/add"]["post"]["parameters"]
    (expires,) = [parameter for parameter in parameters if parameter["name"] == "expires"]
    assert "expired" in expires["description"]
    states = client.get("/openapi.json").json()["components"]["schemas"]["TaskState"]["enum"]
    assert "expired" in states


@pytest.mark.parametrize("expires", [-1, 0, float("inf"), float("nan"), 2_592_001, timedelta(days=31),
                                     timedelta(0)])
def test_with_options_refuses_a_bad_expires(expires: float | timedelta) -> None:
    with pytest.raises(taskgate.InvalidArguments) as refused:
        sample_tasks.logged_sleep.with_options(expires=expires)
    assert [error.loc for error in refused.value.errors] == [("option", "expires")]
    assert "option 'expires'" in str(refused.value)


def test_job_result_raises_task_expired(redis_url: str, worker: object, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"

    async def body(tg: taskgate.Taskgate) -> tuple[taskgate.TaskExpired, taskgate.TaskRecord]:
        job = await sample_tasks.logged_sleep.with_options(countdown=30, expires=timedelta(seconds=0.3)).submit(
            log=str(log), token="t", seconds=0)
        with pytest.raises(taskgate.TaskExpired) as expired:
            await job.result(timeout=15)
        return expired.value, await job.status()

    expired, record = with_gate(redis_url, body)
    assert record.state is taskgate.TaskState.EXPIRED and record.state.is_terminal
    assert expired.task_id == record.task_id and expired.error == record.error
    assert expired.error["type"] == "Expired"
    assert lines(log) == []


def test_task_expired_is_a_409_in_the_users_routes() -> None:
    app = FastAPI()
    errors.install(app)
    error = {"type": "Expired", "message": "not started before its expiry (2030-01-01T00:00:00Z): it will "
             "never run", "retryable": False}

    @app.get("/late")
    async def late() -> None:
        raise taskgate.TaskExpired("t-1", error)

    async def ask() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return await http.get("/late")

    response = asyncio.run(ask())
    assert response.status_code == 409
    body = orjson.loads(response.content)["error"]
    assert (body["type"], body["task_id"], body["task_error"], body["retryable"]) == (
        "task_expired", "t-1", error, False)

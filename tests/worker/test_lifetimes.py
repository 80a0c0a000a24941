"""Every accepted task runs or ends truthfully, however long it waits and however its process
goes: records outlive delays, queues and backoffs; a hard time limit or a killed pool process
ends or requeues the record; a frozen worker's running task is never handed to a second one.

Executions are counted by the task itself (``counted`` logs each start and each end)."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis import Redis

from taskgate.records import keys, scripts

from ..helpers import Stack, happens, lines, submit, wait, wait_for

TTL = 2  # TASKGATE_RESULT_TTL of the TTL tests: every wait in them outlives it


def runs(log: Path) -> dict[str, list[str]]:
    """token -> the events ("start"/"end") the task logged, in order."""
    seen: dict[str, list[str]] = {}
    for line in lines(log):
        event, token, _pid = line.split()
        seen.setdefault(token, []).append(event)
    return seen


def outlive(seconds: float) -> None:
    """Let real time pass (a TTL must run out); this waits for the clock, not for a process."""
    time.sleep(seconds)


def test_delays_longer_than_the_record_ttl_run_once(stack: Stack) -> None:
    stack.env["TASKGATE_RESULT_TTL"] = str(TTL)
    stack.start_worker()
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    log = stack.tmp / "runs"
    ids = [submit(client, "counted", {"log": str(log), "token": f"c{i}"}, countdown=2 * TTL) for i in range(4)]
    eta = (datetime.now(UTC) + timedelta(seconds=2 * TTL)).isoformat()
    ids.append(submit(client, "counted", {"log": str(log), "token": "eta"}, eta=eta))
    assert [redis.ttl(keys.record(task_id)) for task_id in ids] == [-1] * 5, "no TTL while waiting"
    tasks = [wait(client, task_id, 30) for task_id in ids]
    assert [task["state"] for task in tasks] == ["succeeded"] * 5, tasks
    assert runs(log) == {token: ["start", "end"] for token in ["c0", "c1", "c2", "c3", "eta"]}
    assert all(0 < redis.ttl(keys.record(task_id)) <= TTL for task_id in ids), "the TTL starts at the end"
    wait_for(lambda: client.get(f"/tasks/{ids[0]}").status_code == 404, 10, "the ended record to expire")


def test_a_queue_longer_than_the_record_ttl_loses_nothing(stack: Stack) -> None:
    stack.env["TASKGATE_RESULT_TTL"] = str(TTL)
    client = stack.start_api()  # no worker yet: the tasks wait in the queue
    log = stack.tmp / "runs"
    ids = [submit(client, "counted", {"log": str(log), "token": f"q{i}"}) for i in range(3)]
    outlive(TTL + 1)
    assert [client.get(f"/tasks/{task_id}").json()["state"] for task_id in ids] == ["queued"] * 3
    stack.start_worker()
    assert [wait(client, task_id, 30)["state"] for task_id in ids] == ["succeeded"] * 3
    assert runs(log) == {f"q{i}": ["start", "end"] for i in range(3)}


def test_scripts_leave_no_ttl_on_a_record_that_may_still_run(redis_url: str) -> None:
    """Each transition that leaves a task to wait or run takes the record's TTL away; ending it
    gives it one. Run on the real scripts against the real server."""
    redis = Redis.from_url(redis_url)
    key = keys.record("ttl-probe")
    run = scripts.Scripts(redis)

    def fresh(state: str) -> None:
        redis.delete(key)
        redis.hset(key, mapping={"name": "counted", "state": state, "created_at": 1})
        redis.expire(key, 100)

    fresh("started")  # a retry parks for longer than any TTL
    run(scripts.park("ttl-probe", "anonymous", due=time.time() + 3600, message=b"{}", queue="q", error=b"{}"))
    assert redis.ttl(key) == -1
    redis.zrem(keys.DELAYED, "ttl-probe")
    fresh("started")  # Celery's own retry keeps it alive
    assert run(scripts.retrying("ttl-probe", "anonymous", due=time.time() + 3600, error=b"{}")).changed
    assert redis.ttl(key) == -1
    fresh("started")  # its end gives it one
    assert run(scripts.succeeded("ttl-probe", "anonymous", now=time.time(), ttl=TTL, result=b"3")).changed
    assert 0 < redis.ttl(key) <= TTL
    fresh("failed")  # a requeued dead letter waits in its queue for as long as it takes
    redis.zadd(keys.DEAD, {"ttl-probe": 1})
    run(scripts.requeue("ttl-probe", "anonymous", queue=None, message=b"{}", now=time.time()))
    assert redis.ttl(key) == -1
    redis.delete(key, keys.inflight("anonymous"))


def test_hard_time_limit_ends_the_record_failed(stack: Stack) -> None:
    stack.start_worker()
    client = stack.start_api()
    log = stack.tmp / "runs"
    task_id = submit(client, "time_boxed", {"log": str(log), "token": "boxed", "seconds": 10})
    began = time.monotonic()
    task = wait(client, task_id, 20)
    assert time.monotonic() - began < 8, "ended by the 2 s limit, not by the 10 s sleep"
    assert task["state"] == "failed", task
    assert task["error"]["type"] == "TimeLimitExceeded" and task["error"]["retryable"] is False
    assert "hard time limit (2" in task["error"]["message"]
    assert runs(log) == {"boxed": ["start"]}, "killed once, never run again"
    assert client.get(f"/result/{task_id}").json()["status"] == "failed"
    assert client.post(f"/tasks/{task_id}/cancel").status_code == 409
    # The worker replaced the killed process and goes on.
    assert wait(client, submit(client, "counted", {"log": str(log), "token": "after"}))["state"] == "succeeded"
    assert runs(log)["after"] == ["start", "end"]


def test_a_killed_pool_process_puts_the_record_back_to_queued(stack: Stack) -> None:
    """The killed task goes to the back of its queue and its record says so until it starts
    again (concurrency 2: a third task takes the freed process first)."""
    stack.start_worker()
    client = stack.start_api()
    log = stack.tmp / "runs"
    killed = submit(client, "counted", {"log": str(log), "token": "killed", "seconds": 3})
    wait_for(lambda: "killed" in runs(log), 20, "the task to start")
    others = [submit(client, "counted", {"log": str(log), "token": f"o{i}", "seconds": 3}) for i in range(2)]
    wait_for(lambda: "o0" in runs(log), 20, "a second task to start")
    os.kill(int(lines(log)[0].split()[2]), signal.SIGKILL)
    wait_for(lambda: client.get(f"/tasks/{killed}").json()["state"] == "queued", 10, "the record back to queued")
    record = client.get(f"/tasks/{killed}").json()
    assert record["error"]["type"] == "WorkerLostError" and record["error"]["retryable"] is True, record
    tasks = [wait(client, task_id, 40) for task_id in [killed, *others]]
    assert [task["state"] for task in tasks] == ["succeeded"] * 3, tasks
    assert tasks[0]["attempts"] == 2
    assert runs(log) == {"killed": ["start", "start", "end"], "o0": ["start", "end"], "o1": ["start", "end"]}


def test_a_frozen_workers_running_task_is_not_run_twice(stack: Stack) -> None:
    """SIGSTOP of the worker's main process (never its pool child) for longer than the reaper
    needs (heartbeat TTL 10 s + grace 15 s), with a second worker idle: the task runs once.
    (The stronger form of "a long task on a live worker is never handed to a second": here the
    worker sends no heartbeat either.)"""
    first = stack.start_worker()
    client = stack.start_api()
    log = stack.tmp / "runs"
    task_id = submit(client, "counted", {"log": str(log), "token": "long", "seconds": 28})
    wait_for(lambda: "long" in runs(log), 20, "the task to start")
    stack.start_worker()
    os.kill(first.pid, signal.SIGSTOP)
    try:
        second_start = happens(lambda: runs(log)["long"].count("start") > 1, within=25)
        assert not second_start, f"handed to the second worker while running: {runs(log)}"
    finally:
        os.kill(first.pid, signal.SIGCONT)
    task = wait(client, task_id, 30)
    assert task["state"] == "succeeded" and task["attempts"] == 1, task
    assert runs(log) == {"long": ["start", "end"]}

"""Admission end to end on every way into the queue, with a real worker on a private Valkey:
while a run holds a task's only slot, a run made by any path (submit, batch, replay, dead-letter
requeue, a schedule's run-now and its tick, a delayed run's release, a retry's release) waits in
taskgate's Redis, never in Celery's queue, and runs once the slot frees; a run that expires
while waiting never runs and does not hold up the next. Executions are counted by the task
(``tests/sample_tasks._admitted_run``)."""

from __future__ import annotations

from typing import Any

import httpx
from redis import Redis

from taskgate.records import keys

from ..helpers import Stack, submit, wait, wait_for
from .admitted import events, field, in_celery_queue, most_at_once, starts, waits_for_slot


def schedule(client: httpx.Client, token: str, log: str, every: float) -> str:
    """A schedule of `gated` with this token; its id."""
    created = client.post("/schedules", json={"task": "gated", "arguments": {"log": log, "token": token},
                                              "every": every})
    assert created.status_code == 201, created.text
    schedule_id: str = created.json()["schedule_id"]
    return schedule_id


def runs_of(client: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = client.get("/tasks", params={"schedule_id": schedule_id}).json()["tasks"]
    return runs


def test_every_path_into_the_queue_waits_for_a_held_slot(stack: Stack) -> None:
    """`gated` given a concurrency of 1 at runtime (an override: it declares none)."""
    stack.start_worker()
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    log, hold, hold_retry = stack.tmp / "runs", stack.tmp / "hold", stack.tmp / "hold-retry"
    args = {"log": str(log)}
    # Before any limit: a finished run to replay, and a dead letter (2 transient failures, 1 retry).
    done = submit(client, "gated", {**args, "token": "replayed"})
    dead = submit(client, "gated", {**args, "token": "dead", "failures": 2})
    assert wait(client, done)["state"] == "succeeded"
    assert wait(client, dead)["state"] == "failed"
    assert dead in [d["task_id"] for d in client.get("/dead-letters").json()["dead_letters"]]
    redis.hset(keys.LIMITS_OVERRIDE, "gated", '{"concurrency": 1}')

    # A retry: its first attempt holds the slot; the holder waits, then takes the slot when that
    # attempt fails (the same script), and the retry's release finds the slot held.
    hold_retry.touch()
    hold.touch()
    retried = submit(client, "gated", {**args, "token": "retry", "hold": str(hold_retry), "failures": 1})
    wait_for(lambda: starts(log)["retry"] == 1, 20, "the retry's first attempt to start")
    holder = submit(client, "gated", {**args, "token": "holder", "hold": str(hold)})
    assert waits_for_slot(redis, holder), "submit: waits"
    hold_retry.unlink()
    wait_for(lambda: starts(log)["holder"] == 1, 20, "the holder to take the slot")
    wait_for(lambda: waits_for_slot(redis, retried), 10, "the retry to wait for the slot")

    waiting = {"retry": retried}
    waiting["submit"] = submit(client, "gated", {**args, "token": "submit"})
    batch = client.post("/tasks/gated/batch", json={"items": [{**args, "token": f"batch{i}"} for i in range(2)]})
    assert batch.status_code == 202, batch.text
    waiting["batch0"], waiting["batch1"] = (item["task_id"] for item in batch.json()["tasks"])
    replay = client.post(f"/tasks/{done}/replay")
    assert replay.status_code == 202, replay.text
    waiting["replayed"] = replay.json()["task_id"]
    requeued = client.post(f"/dead-letters/{dead}/requeue")
    assert requeued.status_code == 200, requeued.text
    assert requeued.json()["state"] == "queued"
    waiting["dead"] = dead
    now_schedule = schedule(client, "now", str(log), 3600)
    run_now = client.post(f"/schedules/{now_schedule}/run")
    assert run_now.status_code == 202, run_now.text
    waiting["now"] = run_now.json()["task_id"]
    waiting["delayed"] = submit(client, "gated", {**args, "token": "delayed"}, countdown=0.5)
    ticking = schedule(client, "tick", str(log), 1)
    wait_for(lambda: bool(runs_of(client, ticking)), 10, "the schedule's first tick")
    assert client.post(f"/schedules/{ticking}/pause").status_code == 200
    ticks = [run["task_id"] for run in runs_of(client, ticking)]
    waiting.update({f"tick{i}": task_id for i, task_id in enumerate(ticks)})
    wait_for(lambda: field(redis, waiting["delayed"], "waiting_for") is not None, 10, "the delayed run's release")

    for path, task_id in waiting.items():
        assert waits_for_slot(redis, task_id), (path, field(redis, task_id, "state"),
                                                field(redis, task_id, "waiting_for"), in_celery_queue(redis, task_id))
    ran = starts(log)
    assert (ran["retry"], ran["dead"], ran["replayed"]) == (1, 2, 1), ran
    assert not {"submit", "batch0", "batch1", "now", "delayed", "tick"} & set(ran), ran

    hold.unlink()
    tasks = {path: wait(client, task_id, 30) for path, task_id in [("holder", holder), *waiting.items()]}
    assert {path: task["state"] for path, task in tasks.items()} == dict.fromkeys(tasks, "succeeded")
    assert starts(log) == {"holder": 1, "retry": 2, "dead": 3, "replayed": 2, "submit": 1, "batch0": 1,
                           "batch1": 1, "now": 1, "delayed": 1, "tick": len(ticks)}
    later = events(log)[[e.token for e in events(log)].index("holder"):]
    assert most_at_once(later) == 1, "one at a time under the override"
    assert redis.zcard(keys.admission("gated", "slots")) == 0


def test_a_run_expiring_while_it_waits_never_runs_and_the_next_goes(stack: Stack) -> None:
    """`single_slot` (limit 1) held; "late" (?expires=1) and "next" wait behind it: "late" ends
    expired within about 1.5 s of its expiry, unrun; when the slot frees, "next" goes at once."""
    stack.start_worker()
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    log, hold = stack.tmp / "runs", stack.tmp / "hold"
    hold.touch()
    holder = submit(client, "single_slot", {"log": str(log), "token": "holder", "hold": str(hold)})
    wait_for(lambda: starts(log)["holder"] == 1, 20, "the holder to start")
    late = submit(client, "single_slot", {"log": str(log), "token": "late"}, expires=1)
    following = submit(client, "single_slot", {"log": str(log), "token": "next"})
    assert waits_for_slot(redis, late) and waits_for_slot(redis, following)
    expired = wait(client, late, 10)
    assert expired["state"] == "expired", expired
    assert expired["error"]["type"] == "Expired"
    finished_at = redis.hget(keys.record(late), "finished_at")
    expires_at = redis.hget(keys.record(late), "expires_at")
    assert finished_at is not None and expires_at is not None
    assert 0 <= int(finished_at) - int(expires_at) <= 1500, "ended by the keepers' sweep (every 0.5 s)"
    assert waits_for_slot(redis, following), "the next still waits for the slot"
    hold.unlink()
    assert wait(client, following, 20)["state"] == "succeeded"
    assert wait(client, holder, 20)["state"] == "succeeded"
    seen = events(log)
    assert starts(log) == {"holder": 1, "next": 1}, "the expired run never ran"
    ended = next(event.at for event in seen if (event.kind, event.token) == ("end", "holder"))
    began = next(event.at for event in seen if (event.kind, event.token) == ("start", "next"))
    assert began - ended < 1, f"the next run started {began - ended:.2f} s after the slot freed"
    assert redis.zcard(keys.admission("single_slot", "slots")) == 0
    assert not redis.exists(keys.admission("single_slot", "wait", '["",""]')), "nothing left waiting"

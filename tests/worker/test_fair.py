"""Fair queueing by owner (TASKGATE_FAIR_BY=owner) with real workers: no owner's backlog holds
up another's runs, an owner's weight (TASKGATE_FAIR_WEIGHTS) scales its share, and tasks without
limits still run once each."""

from __future__ import annotations

import time

from redis import Redis

from taskgate import Taskgate
from taskgate.records import keys

from .. import sample_tasks
from ..helpers import Stack, wait_for, with_gate
from .admitted import events, most_at_once, starts


def test_owners_runs_alternate_in_the_queue_when_workers_are_the_bottleneck(stack: Stack) -> None:
    """Owner a submits 200 runs of 20 ms of a task without limits, then owner b 5: with fair
    queueing (window 2), b's runs all start within 2 s of their submission, while most of a's
    backlog is still to run; without it (FIFO), b's would start after a's 200 (over 1 s of work
    for 4 worker processes)."""
    stack.env.update(TASKGATE_FAIR_BY="owner", TASKGATE_FAIR_WINDOW="2")
    for _ in range(2):
        stack.start_worker()
    client = stack.start_api()
    log = stack.tmp / "runs"

    async def submit_both(_: Taskgate) -> tuple[float, str]:
        as_a = sample_tasks.shared_fairly.with_options(owner="a")
        as_b = sample_tasks.shared_fairly.with_options(owner="b")
        a_jobs = [await as_a.submit(log=str(log), token=f"a{i}", seconds=0.02) for i in range(200)]
        for i in range(5):
            await as_b.submit(log=str(log), token=f"b{i}", seconds=0.02)
        return time.time(), a_jobs[-1].id

    b_submitted, a_last = with_gate(stack.url, submit_both)
    # a's last run waits its turn in Redis, and GET /tasks/{id} says so (checked while at least
    # 100 of a's runs are still to start: asserted below)
    waiting = client.get(f"/tasks/{a_last}").json()
    assert (waiting["state"], waiting["waiting_for"]) == ("queued", "turn"), waiting
    wait_for(lambda: sum(1 for event in events(log) if event.kind == "end") >= 205, 60, "the 205 runs to end")
    seen = events(log)
    assert starts(log) == {**{f"a{i}": 1 for i in range(200)}, **{f"b{i}": 1 for i in range(5)}}
    a_starts = [event.at for event in seen if event.kind == "start" and event.token.startswith("a")]
    b_starts = [event.at for event in seen if event.kind == "start" and event.token.startswith("b")]
    assert max(b_starts) - b_submitted < 2, f"b's last run started {max(b_starts) - b_submitted:.2f} s late"
    a_left = sum(1 for at in a_starts if at > max(b_starts))
    assert a_left >= 100, f"only {a_left} of a's runs were left when b's last started: b waited its turn late"
    assert most_at_once(seen) <= 4, "4 worker processes"


def test_an_owner_of_weight_2_starts_about_twice_as_many_runs(stack: Stack) -> None:
    """TASKGATE_FAIR_WEIGHTS=a=2, window 1: owners a and b each queue 60 runs of 20 ms (submitted
    in turn); a may have 2 runs in the queue not yet started, b 1, so while both have runs
    waiting a starts about twice as many as b (without the weight, as many)."""
    stack.env.update(TASKGATE_FAIR_BY="owner", TASKGATE_FAIR_WINDOW="1", TASKGATE_FAIR_WEIGHTS="a=2")
    stack.start_worker()
    log = stack.tmp / "runs"

    async def submit_both(_: Taskgate) -> None:
        as_a = sample_tasks.shared_fairly.with_options(owner="a")
        as_b = sample_tasks.shared_fairly.with_options(owner="b")
        for i in range(60):
            await as_a.submit(log=str(log), token=f"a{i}", seconds=0.02)
            await as_b.submit(log=str(log), token=f"b{i}", seconds=0.02)

    with_gate(stack.url, submit_both)
    wait_for(lambda: sum(1 for event in events(log) if event.kind == "end") >= 120, 60, "the 120 runs to end")
    assert starts(log) == {**{f"a{i}": 1 for i in range(60)}, **{f"b{i}": 1 for i in range(60)}}
    first = [event.token[0] for event in events(log) if event.kind == "start"][:45]
    a, b = first.count("a"), first.count("b")
    assert 1.5 <= a / b <= 2.6, f"of the first 45 starts a had {a}, b {b}: not about 2 to 1"


def test_a_worker_started_without_it_turns_fair_queueing_off_for_all_and_says_so(stack: Stack) -> None:
    """The last worker started decides for every worker: one started without TASKGATE_FAIR_BY
    turns it off, and its log says so (a newcomer found it off with nothing saying why)."""
    redis = Redis.from_url(stack.url)
    stack.start_worker(TASKGATE_FAIR_BY="owner", TASKGATE_FAIR_WINDOW="3")
    wait_for(lambda: redis.get(keys.FAIR) == b"3", 10, "the first worker to turn fair queueing on")
    stack.start_worker()
    wait_for(lambda: redis.get(keys.FAIR) is None, 10, "the plain worker to turn it off")
    log = stack.tmp / "worker-1.log"
    wait_for(lambda: "fair queueing by owner is now off for every worker" in log.read_text(), 10,
             "the plain worker to say it turned fair queueing off")
    assert "(it was on (window 3))" in log.read_text()
    redis.close()

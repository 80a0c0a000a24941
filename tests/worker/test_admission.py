"""Admission end to end, with real workers on a private Valkey: a concurrency limit holds across
worker processes (and through one SIGKILLed holding a slot), a rate limit across two APIs and two
workers, owners take turns at their slots, and a runtime override takes effect. Executions are
counted by the tasks themselves (``tests/sample_tasks._admitted_run``: a line per start and end).
The enqueue paths and expiry while waiting: ``test_admission_paths.py``."""

from __future__ import annotations

import signal
import time
from collections import Counter

import httpx
from redis import Redis

from taskgate import Taskgate
from taskgate.records import keys

from .. import sample_tasks
from ..helpers import Stack, children, happens, kill, start_api, stop, submit, wait, wait_for, with_gate
from .admitted import Event, events, most_at_once, starts, waits_for_slot


def test_a_concurrency_limit_holds_across_two_workers(stack: Stack) -> None:
    """`paired` (limit 2) on 2 workers of 2 processes each: 2 run, the rest wait in Redis for a
    slot (not in Celery's queue); then all run, never more than 2 at once."""
    workers = [stack.start_worker() for _ in range(2)]
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    log, hold = stack.tmp / "runs", stack.tmp / "hold"
    hold.touch()
    ids = [submit(client, "paired", {"log": str(log), "token": f"r{i}", "seconds": 0.2, "hold": str(hold)})
           for i in range(12)]
    wait_for(lambda: sum(starts(log).values()) == 2, 20, "two runs to start")
    waiting = [task_id for task_id in ids if waits_for_slot(redis, task_id)]
    assert len(waiting) == 10, [(redis.hget(keys.record(i), "state"), redis.hget(keys.record(i), "waiting_for"))
                                for i in ids]
    assert {client.get(f"/tasks/{task_id}").json()["state"] for task_id in waiting} == {"queued"}
    assert not happens(lambda: sum(starts(log).values()) > 2, within=1), "a third run started"
    unrelated = wait(client, submit(client, "add", {"x": 1, "y": 2}), 20)
    assert unrelated["state"] == "succeeded", "the waiting runs hold up no other task"
    hold.unlink()
    tasks = [wait(client, task_id, 30) for task_id in ids]
    assert [task["state"] for task in tasks] == ["succeeded"] * 12, tasks
    assert starts(log) == {f"r{i}": 1 for i in range(12)}
    seen = events(log)
    assert most_at_once(seen) == 2, "never more than the limit, and the limit's 2 did run at once"
    pools = [set(children(worker.pid)) for worker in workers]
    ran_on = {index for event in seen for index, pool in enumerate(pools) if event.pid in pool}
    assert ran_on == {0, 1}, f"both workers ran some ({Counter(event.pid for event in seen)})"
    assert redis.zcard(keys.admission("paired", "slots")) == 0, "every slot given back"


def test_a_slot_held_by_a_killed_worker_comes_back_and_the_limit_holds(stack: Stack) -> None:
    """Worker A is SIGKILLed (main and pool) running `paired`'s "victim"; B runs the rest through
    the one free slot, one at a time, while the victim's slot stays taken; the victim runs again
    on B once the keepers find A dead (heartbeat TTL + grace, about 25 s), and every run ends."""
    first = stack.start_worker()
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    log, hold = stack.tmp / "runs", stack.tmp / "hold"
    hold.touch()  # the victim runs until it is gone
    victim = submit(client, "paired", {"log": str(log), "token": "victim", "seconds": 0.5, "hold": str(hold)})
    wait_for(lambda: starts(log)["victim"] == 1, 20, "the victim to start")
    stack.start_worker()
    for pid in [first.pid, *children(first.pid)]:
        kill(pid, signal.SIGKILL)
    first.wait()
    killed_at, written = time.time(), len(events(log))
    assert [(event.kind, event.token) for event in events(log)] == [("start", "victim")], "killed while running"
    hold.unlink()  # for its next run
    others = [submit(client, "paired", {"log": str(log), "token": f"o{i}", "seconds": 0.3}) for i in range(6)]
    tasks = [wait(client, task_id, 60) for task_id in [victim, *others]]
    assert [task["state"] for task in tasks] == ["succeeded"] * 7, tasks
    assert tasks[0]["attempts"] == 2, tasks[0]
    assert starts(log) == {"victim": 2, **{f"o{i}": 1 for i in range(6)}}
    seen = events(log)
    rerun = next(event for event in seen[written:] if (event.kind, event.token) == ("start", "victim"))
    assert rerun.at - killed_at < 45, f"the victim ran again {rerun.at - killed_at:.1f} s after the kill"
    # The killed run's interval ends at the kill: never more than 2 running at once.
    interrupted = Event("end", "victim", seen[0].pid, killed_at)
    assert most_at_once([*seen[:written], interrupted, *seen[written:]]) <= 2
    # Until the victim ran again its slot stayed taken: the others went one at a time.
    before_rerun = seen[written:seen.index(rerun)]
    assert {event.token for event in before_rerun if event.kind == "end"} == {f"o{i}" for i in range(6)}, (
        "the others ran while the victim waited for recovery")
    assert most_at_once(before_rerun) == 1, "the killed run's slot was handed out before it was recovered"
    assert redis.zcard(keys.admission("paired", "slots")) == 0, "every slot given back"


def test_a_frozen_workers_run_keeps_its_slot_and_runs_once(stack: Stack) -> None:
    """SIGSTOP of worker A's main process (its pool process goes on running `paired`'s "frozen")
    for longer than the keepers take to find a dead worker (heartbeat TTL 10 s + grace 15 s):
    the run is not run again, and its slot is not handed out, so B runs the others one at a time."""
    first = stack.start_worker()
    client = stack.start_api()
    log, hold = stack.tmp / "runs", stack.tmp / "hold"
    hold.touch()
    frozen = submit(client, "paired", {"log": str(log), "token": "frozen", "hold": str(hold)})
    # An unlimited run fills A's other process, so A's consumer takes no message while frozen
    # (a blocked BRPOP would hand a frozen worker the next run, in its socket: not admission's doing).
    filler = submit(client, "gated", {"log": str(log), "token": "filler", "hold": str(hold)})
    wait_for(lambda: starts(log)["frozen"] == starts(log)["filler"] == 1, 20, "the runs to start")
    stack.start_worker()
    kill(first.pid, signal.SIGSTOP)
    try:
        others = [submit(client, "paired", {"log": str(log), "token": f"o{i}", "seconds": 0.2}) for i in range(4)]
        wait_for(lambda: sum(1 for event in events(log) if event.kind == "end") == 4, 20, "the others to run")
        ran_again = happens(lambda: starts(log)["frozen"] > 1, within=27)
    finally:
        kill(first.pid, signal.SIGCONT)
    assert not ran_again, f"run again while its worker was frozen: {starts(log)}"
    assert most_at_once(events(log), lambda token: token.startswith("o")) == 1, "the frozen run's slot was handed out"
    hold.unlink()
    tasks = [wait(client, task_id, 30) for task_id in [frozen, filler, *others]]
    assert [task["state"] for task in tasks] == ["succeeded"] * 6, tasks
    assert tasks[0]["attempts"] == 1
    assert starts(log) == {"frozen": 1, "filler": 1, **{f"o{i}": 1 for i in range(4)}}


def test_a_rate_limit_holds_across_two_apis_and_two_workers(stack: Stack) -> None:
    """`metered` (20/s, bursts of 2): 60 runs submitted through 2 API processes (alternately) to
    2 workers start no faster than the limit, counted in the task."""
    for _ in range(2):
        stack.start_worker()
    first = stack.start_api()
    api, base = start_api(stack.url, stack.tmp / "api-2.log")
    try:
        with httpx.Client(base_url=base, timeout=10) as second:
            log = stack.tmp / "runs"
            ids = [submit((first, second)[i % 2], "metered", {"log": str(log), "token": f"m{i}"})
                   for i in range(60)]
            tasks = [wait(first, task_id, 60) for task_id in ids]
    finally:
        stop(api)
    assert [task["state"] for task in tasks] == ["succeeded"] * 60, tasks
    assert starts(log) == {f"m{i}": 1 for i in range(60)}
    times = sorted(event.at for event in events(log) if event.kind == "start")
    # 2 at once, then one every 50 ms: the 60th no sooner than 2.9 s after the first (less the
    # workers' scheduling jitter); a limit kept per process would let them through in half that.
    assert times[-1] - times[0] >= 2.6, f"60 runs started in {times[-1] - times[0]:.2f} s"
    busiest = max(sum(1 for t in times if begin <= t < begin + 1) for begin in times)
    assert busiest <= 20 + 2 + 1, f"{busiest} runs started within one second (20/s, burst 2, 1 of jitter)"


def test_a_rate_limited_backlog_runs_at_its_rate(stack: Stack) -> None:
    """The other side of the rate limit: 60 runs at 20/s (bursts of 2) start within about 3 s,
    not at the pace of the keepers' passes (2 keepers passing every 0.5 s, admitting up to 2
    each, would take at least 7.25 s: keepers wake when the next run's rate lets it go)."""
    for _ in range(2):
        stack.start_worker()
    client = stack.start_api()
    log = stack.tmp / "runs"
    ids = [submit(client, "metered", {"log": str(log), "token": f"m{i}"}) for i in range(60)]
    tasks = [wait(client, task_id, 60) for task_id in ids]
    assert [task["state"] for task in tasks] == ["succeeded"] * 60, tasks
    times = sorted(event.at for event in events(log) if event.kind == "start")
    assert times[-1] - times[0] <= 6, (
        f"60 runs limited to 20/s took {times[-1] - times[0]:.2f} s to start "
        f"(one second's starts: {Counter(int(t - times[0]) for t in times)})")


def test_a_rate_limit_per_key_keeps_each_key_to_its_own_rate(stack: Stack) -> None:
    """`metered_per_customer` (10/s per customer, burst 1): 15 runs of customer a, then 15 of b.
    Each customer's runs start no faster than 10/s, and b's do not wait behind a's, as they
    would with one bucket for both."""
    stack.start_worker()
    client = stack.start_api()
    log = stack.tmp / "runs"
    ids = [submit(client, "metered_per_customer", {"log": str(log), "token": f"{c}{i}", "customer": c})
           for c in "ab" for i in range(15)]
    tasks = [wait(client, task_id, 60) for task_id in ids]
    assert [task["state"] for task in tasks] == ["succeeded"] * 30, tasks
    assert starts(log) == {f"{c}{i}": 1 for c in "ab" for i in range(15)}
    seen = [event for event in events(log) if event.kind == "start"]
    times = {c: sorted(event.at for event in seen if event.token.startswith(c)) for c in "ab"}
    for customer, at in times.items():
        # 14 intervals of 100 ms after the first: 1.4 s, less the workers' scheduling jitter
        assert at[-1] - at[0] >= 1.2, f"customer {customer}'s 15 runs started in {at[-1] - at[0]:.2f} s"
    alongside = sum(1 for at in times["b"] if at < times["a"][-1])
    assert alongside >= 5, f"only {alongside} of b's runs started before a's last: b waited behind a"


def test_owners_take_turns_at_their_slots(stack: Stack) -> None:
    """`per_owner` (2 per owner): owner a submits 200 runs of 20 ms, then owner b 5; b's runs all
    start within 2 s of their submission while a's backlog is still running."""
    for _ in range(2):
        stack.start_worker()
    log = stack.tmp / "runs"

    async def submit_both(_: Taskgate) -> float:
        as_a = sample_tasks.per_owner.with_options(owner="a")
        as_b = sample_tasks.per_owner.with_options(owner="b")
        for i in range(200):
            await as_a.submit(log=str(log), token=f"a{i}", seconds=0.02)
        for i in range(5):
            await as_b.submit(log=str(log), token=f"b{i}", seconds=0.02)
        return time.time()

    b_submitted = with_gate(stack.url, submit_both)
    wait_for(lambda: sum(1 for event in events(log) if event.kind == "end") >= 205, 60, "the 205 runs to end")
    seen = events(log)
    assert starts(log) == {**{f"a{i}": 1 for i in range(200)}, **{f"b{i}": 1 for i in range(5)}}
    a_starts = [event.at for event in seen if event.kind == "start" and event.token.startswith("a")]
    b_starts = [event.at for event in seen if event.kind == "start" and event.token.startswith("b")]
    assert max(b_starts) - b_submitted < 2, f"b's last run started {max(b_starts) - b_submitted:.2f} s late"
    assert max(b_starts) < max(a_starts), "b waited behind a's backlog"
    a_left = sum(1 for at in a_starts if at > max(b_starts))
    assert a_left >= 20, f"only {a_left} of a's runs were left when b's last started: not a backlog"
    assert most_at_once(seen, lambda token: token.startswith("a")) <= 2
    assert most_at_once(seen, lambda token: token.startswith("b")) <= 2
    assert most_at_once(seen) <= 4


def test_a_runtime_override_takes_effect_when_a_run_ends(stack: Stack) -> None:
    """`single_slot` (declared limit 1): one run holds the slot, 3 wait; with an override of 3,
    the end of the holder admits all three, and they run at once."""
    for _ in range(2):
        stack.start_worker()
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    log, holding, three = stack.tmp / "runs", stack.tmp / "holding", stack.tmp / "three"
    holding.touch()
    three.touch()
    holder = submit(client, "single_slot", {"log": str(log), "token": "holder", "hold": str(holding)})
    wait_for(lambda: starts(log)["holder"] == 1, 20, "the holder to start")
    ids = [submit(client, "single_slot", {"log": str(log), "token": f"w{i}", "hold": str(three)})
           for i in range(3)]
    assert all(waits_for_slot(redis, task_id) for task_id in ids)
    redis.hset(keys.LIMITS_OVERRIDE, "single_slot", '{"concurrency": 3}')
    holding.unlink()
    wait_for(lambda: all(starts(log)[f"w{i}"] == 1 for i in range(3)), 10, "the three to start")
    assert [event.kind for event in events(log)] == ["start", "end", "start", "start", "start"], (
        "the three run at once")
    three.unlink()
    tasks = [wait(client, task_id, 30) for task_id in [holder, *ids]]
    assert [task["state"] for task in tasks] == ["succeeded"] * 4, tasks
    assert redis.zcard(keys.admission("single_slot", "slots")) == 0


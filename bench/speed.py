"""Issue 25's measures that the other sections lack, and its targets table (`make bench`).

* Section 2b, a worker draining a queue: ``taskgate worker -c 2`` against a plain ``celery worker
  -c 2`` on the same kind of task (``add``), each frozen (SIGSTOP) while N tasks are queued, then
  let go: tasks/s from the moment it is let go to the last task's stored end (the record's
  ``finished_at``; Celery's ``date_done``), so neither submitting nor waiting counts.
* Section 3b, the in-process round trip: ``await add.submit()`` then ``await job.result()``
  against Celery's ``add.delay(1, 2).get()``, alternating, one at a time.
* The targets of issue 25, from the figures the sections put in ``figures``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import redis

from bench.run import Report, Stack, fmt, median, percentile, targets_table

#: (figure, what, goal, True when the goal is a floor), in the issue's order.
TARGETS = [
    ("get_vs_lpush", "`GET /add` req/s / one awaited LPUSH endpoint", 1.2, True),
    ("get_vs_bare", "`GET /add` req/s / bare FastAPI endpoint", 0.75, True),
    ("get_p99_vs_bare", "`GET /add` p99 / bare endpoint p99", 3.0, False),
    ("auth", "`POST /tasks/add` req/s, auth on / auth off", 0.9, True),
    ("inprocess_32", "in-process `await add.submit()`, 32 in flight / `add.delay()` loop", 10.0, True),
    ("rt_inprocess", "round trip p50, in process / `add.delay(1, 2).get()`", 0.9, False),
    ("wait", "round trip p50, HTTP submit + `?wait=` / `add.delay(1, 2).get()`", 1.2, False),
    ("e2e", "end to end, tasks over HTTP / raw Celery, same worker concurrency", 1.2, True),
    ("worker", "worker tasks/s / plain `celery worker`, same tasks and concurrency", 1.0, True),
    ("feeds_delivered", "300 open feeds at 500 changes/s offered: changes delivered/s", 500, True),
    ("feeds_submit_p50", "300 open feeds: submit p50 / submit p50 without feeds", 2.0, False),
]


def targets(figures: dict[str, float]) -> list[list[str]]:
    """One row per target of issue 25: the goal, this run's figure, and whether it is met; a
    figure this run did not measure says so."""
    return targets_table(figures, TARGETS, unmeasured=True)


def _freeze(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to the worker and its pool processes (its process group's members we know)."""
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    for pid in [proc.pid, *map(int, children)]:
        os.kill(pid, sig)


def worker_throughput(stack: Stack, args: argparse.Namespace, report: Report, figures: dict[str, float]) -> None:
    from bench.apps import add as celery_add
    from bench.apps import celery_app
    from taskgate import Taskgate
    from taskgate.tasks.arithmetic import add

    n = args.tasks
    client = redis.Redis.from_url(stack.url)
    taskgate_rates: list[float] = []
    ahead_rates: list[float] = []  # TASKGATE_WORKER_PREFETCH=4: Celery's own default
    celery_rates: list[float] = []

    async def taskgate_round(proc: subprocess.Popen[bytes]) -> float:
        async with Taskgate(redis_url=stack.url, data_dir=stack.tmp / "library", auth=False):
            _freeze(proc, signal.SIGSTOP)
            try:
                jobs = []
                for offset in range(0, n, 500):
                    jobs += await asyncio.gather(*(add.submit(x=i, y=1) for i in range(offset, min(n, offset + 500))))
            finally:
                let_go = time.time()
                _freeze(proc, signal.SIGCONT)
            for job in jobs:
                await job.result(timeout=300)
            ends = [(await job.status()).finished_at for job in jobs]
            return float(n / (max(end.timestamp() for end in ends if end is not None) - let_go))

    def celery_round(proc: subprocess.Popen[bytes]) -> float:
        _freeze(proc, signal.SIGSTOP)
        try:
            results = [celery_add.delay(i, 1) for i in range(n)]
        finally:
            let_go = time.time()
            _freeze(proc, signal.SIGCONT)
        for result in results:
            result.get(timeout=300)
        ends = [datetime.fromisoformat(str(celery_app.backend.get_task_meta(r.id)["date_done"])) for r in results]
        return float(n / (max(end.timestamp() for end in ends) - let_go))

    for _ in range(args.reps):  # alternating, each on a fresh worker and an empty server
        stack.reset_data(client)
        worker = stack.worker("taskgate-worker-drain", [sys.executable, "-m", "taskgate", "worker",
                                                        "--concurrency=2", "--log-level=warning"])
        taskgate_rates.append(asyncio.run(taskgate_round(worker)))
        stack.stop(worker)
        stack.reset_data(client)
        worker = stack.worker("taskgate-worker-drain-4", [sys.executable, "-m", "taskgate", "worker",
                                                          "--concurrency=2", "--log-level=warning"],
                              TASKGATE_WORKER_PREFETCH="4")
        ahead_rates.append(asyncio.run(taskgate_round(worker)))
        stack.stop(worker)
        stack.reset_data(client)
        raw = stack.worker("celery-worker-drain", [sys.executable, "-m", "celery", "-A", "bench.apps:celery_app",
                                                   "worker", "-c", "2", "--without-gossip", "--without-mingle",
                                                   "-l", "warning"])
        celery_rates.append(celery_round(raw))
        stack.stop(raw)
    stack.reset_data(client)
    client.close()
    figures["worker"] = median(taskgate_rates) / median(celery_rates)
    report.add(f"## 2b. A worker draining a queue: {n} `add` tasks, concurrency 2, {args.reps} repetitions")
    report.add()
    report.add("Each worker is frozen (SIGSTOP, pool processes too) while the tasks are queued, then let "
               "go: tasks/s from then to the last task's stored end (taskgate's record `finished_at`, "
               "Celery's `date_done`). `taskgate worker` with its defaults (late acks, prefetch 1, a "
               "record script at start and at end, timeline, stats), and the same holding 4 messages "
               "per process (`TASKGATE_WORKER_PREFETCH=4`, Celery's default: the next tasks wait in "
               "the worker, not in Redis); a plain `celery worker -c 2` of the tutorial's app (early "
               "acks, prefetch 4, result backend on).")
    report.add()
    report.table(["worker", "tasks/s", "vs plain Celery"],
                 [["`taskgate worker -c 2`", fmt(taskgate_rates), f"{figures['worker']:.2f}x"],
                  ["  with `TASKGATE_WORKER_PREFETCH=4`", fmt(ahead_rates),
                   f"{median(ahead_rates) / median(celery_rates):.2f}x"],
                  ["`celery worker -c 2`", fmt(celery_rates), "1.00x"]])


def round_trip_in_process(stack: Stack, args: argparse.Namespace, report: Report,
                          figures: dict[str, float]) -> None:
    from bench.apps import add as celery_add
    from taskgate import Taskgate
    from taskgate.tasks.arithmetic import add

    worker = stack.worker("taskgate-worker-rt2", [sys.executable, "-m", "taskgate", "worker",
                                                  "--concurrency=2", "--log-level=warning"])
    raw = stack.worker("celery-worker-rt2", [sys.executable, "-m", "celery", "-A", "bench.apps:celery_app",
                                             "worker", "-c", "2", "--without-gossip", "--without-mingle",
                                             "-l", "warning"])
    library_ms: list[float] = []
    raw_ms: list[float] = []

    async def rounds() -> None:
        async with Taskgate(redis_url=stack.url, data_dir=stack.tmp / "library", auth=False):
            await (await add.submit(x=0, y=0)).result(timeout=30)  # connections and scripts ready
            for _ in range(args.roundtrips):
                began = time.perf_counter()
                job = await add.submit(x=1, y=2)
                assert await job.result(timeout=10) == 3
                library_ms.append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                assert celery_add.delay(1, 2).get(timeout=10) == 3  # blocking: nothing else runs meanwhile
                raw_ms.append((time.perf_counter() - began) * 1000)

    try:
        asyncio.run(rounds())
    finally:
        stack.stop(worker)
        stack.stop(raw)
    base = median(raw_ms)
    figures["rt_inprocess"] = median(library_ms) / base
    report.add(f"## 3b. Single-task round trip in process ({args.roundtrips} tasks each, alternating)")
    report.add()
    report.add("taskgate as a library in one Python process (`await add.submit(x=1, y=2)`, then `await "
               "job.result()`, which waits on the task's events) against Celery's `add.delay(1, "
               "2).get()` of the tutorial's app (Redis result backend), each worker `-c 2`.")
    report.add()
    report.table(["path", "p50 ms", "p99 ms", "p50 vs delay().get()"],
                 [["`await add.submit()` + `await job.result()`", f"{median(library_ms):.2f}",
                   f"{percentile(library_ms, 0.99):.2f}", f"{figures['rt_inprocess']:.2f}x"],
                  ["`add.delay(1, 2).get()`", f"{base:.2f}", f"{percentile(raw_ms, 0.99):.2f}", "1.00x"]])

"""Where a worker's CPU goes per task (`make bench`, section 6b): ``taskgate worker -c 2`` and a
plain ``celery worker -c 2`` each drain the same number of ``add`` tasks while py-spy samples the
worker and its pool processes (``--subprocesses``). The CPU of every process of the worker (from
/proc, main and pool) over the drain, divided by the tasks, is split by the share of samples in
each component, as section 6 splits the API's (``bench.profile.classify``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.profile import classify, cpu_seconds
from bench.run import Report, Stack

#: (component, how the paths of its frames start), most specific first.
COMPONENTS = [
    ("taskgate: record scripts at start and end (call, reply)", ("taskgate/records/",)),
    ("taskgate: the task's run (arguments, result, pulse)", ("taskgate/",)),
    ("redis-py (connections, parser)", ("redis/",)),
    ("Pydantic", ("pydantic",)),
    ("kombu (messages, Redis transport)", ("kombu/",)),
    ("billiard (the pool: pipes, pickling)", ("billiard/",)),
    ("Celery (consumer, requests, tracing, result backend)", ("celery/",)),
]
OTHER = "interpreter, standard library and the rest"


def _processes(proc: subprocess.Popen[bytes]) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    return [proc.pid, *map(int, children)]


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:  # the worker and its pool processes, which this run started
        os.kill(pid, sig)


def _drain(proc: subprocess.Popen[bytes], queue: Callable[[int], list[Any]], wait: Callable[[list[Any]], object],
           n: int, out: Path) -> tuple[float, Counter[str]]:
    """CPU µs per task of the worker ``proc`` draining ``n`` tasks ``queue`` sends while it is
    frozen, and its py-spy samples by component."""
    pids = _processes(proc)
    _signal(pids, signal.SIGSTOP)
    try:
        handles = queue(n)
    finally:
        _signal(pids, signal.SIGCONT)
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--rate", "250", "--format", "raw",
                            "--output", str(out), "--pid", str(proc.pid), "--subprocesses", "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = sum(cpu_seconds(pid) for pid in pids)
    wait(handles)
    used = sum(cpu_seconds(pid) for pid in pids) - before
    spy.send_signal(signal.SIGINT)
    spy.wait(60)
    samples: Counter[str] = Counter()
    if out.exists():
        for line in out.read_text().splitlines():
            stack_text, _, count = line.rpartition(" ")
            samples[classify(stack_text, COMPONENTS, OTHER)] += int(count)
    return used / n * 1e6, samples


def worker_profile_section(stack: Stack, report: Report, n: int) -> None:
    """Profile both workers draining ``n`` tasks; add the table to ``report``."""
    from bench.apps import add as celery_add
    from taskgate import Taskgate
    from taskgate.tasks.arithmetic import add

    client = redis.Redis.from_url(stack.url)

    def taskgate_queue(count: int) -> list[str]:
        async def go() -> list[str]:
            async with Taskgate(redis_url=stack.url, data_dir=stack.tmp / "library", auth=False):
                ids: list[str] = []
                for offset in range(0, count, 500):
                    jobs = await asyncio.gather(*(add.submit(x=i, y=1) for i in range(offset, min(count, offset + 500))))
                    ids += [job.id for job in jobs]
                return ids
        return asyncio.run(go())

    def taskgate_wait(ids: list[str]) -> None:
        async def go() -> None:
            async with Taskgate(redis_url=stack.url, data_dir=stack.tmp / "library", auth=False) as gate:
                for task_id in ids:
                    await (await gate.job(task_id)).result(timeout=300)
        asyncio.run(go())

    columns = []
    stack.reset_data(client)
    worker = stack.worker("taskgate-worker-profile", [sys.executable, "-m", "taskgate", "worker", "--concurrency=2",
                                                      "--log-level=warning"])
    columns.append(("`taskgate worker -c 2`", *_drain(worker, taskgate_queue, taskgate_wait, n,
                                                      stack.tmp / "worker-spy.txt")))
    stack.stop(worker)
    stack.reset_data(client)
    raw = stack.worker("celery-worker-profile", [sys.executable, "-m", "celery", "-A", "bench.apps:celery_app",
                                                 "worker", "-c", "2", "--without-gossip", "--without-mingle",
                                                 "-l", "warning"])
    columns.append(("`celery worker -c 2`", *_drain(
        raw, lambda count: [celery_add.delay(i, 1) for i in range(count)],
        lambda results: [result.get(timeout=300) for result in results], n, stack.tmp / "celery-spy.txt")))
    stack.stop(raw)
    stack.reset_data(client)
    client.close()
    rows = []
    for component in [*(name for name, _ in COMPONENTS), OTHER]:
        cells = [f"{per_task * samples[component] / (sum(samples.values()) or 1):.0f}"
                 for _, per_task, samples in columns]
        if any(cell != "0" for cell in cells):
            rows.append([component, *cells])
    rows.append(["**total CPU per task**", *[f"**{per_task:.0f}**" for _, per_task, _ in columns]])
    report.add(f"py-spy samples (`--subprocesses`) of each worker draining {n:,} `add` tasks queued while it "
               "was frozen; µs are the CPU of all its processes (main and pool, from /proc, over the "
               "drain) per task, split by the share of samples in each component. A sample is charged to "
               "the nearest frame, from the leaf, in a named component. Both workers share the machine "
               "with the Valkey server, whose own CPU per task is not in these figures.")
    report.add()
    report.table(["component (µs of worker CPU per task)", *[name for name, _, _ in columns]], rows)

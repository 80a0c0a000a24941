"""Section 12 of ``make bench``: admission (issue 24), measured against what exists.

Fairness with ``Concurrency(limit=2, key="owner")`` (bench/admission_tasks.py), with fair
queueing by owner (``TASKGATE_FAIR_BY=owner``) and no per-task limit, and with neither;
the accuracy of a cluster-wide ``50/s`` across 4 worker processes and their CPU meanwhile; the
cost of a limit that never binds, the time from a freed slot to the next run's start, and the
submit path of an unlimited task with another task limited. Limits not declared by a task are
set as runtime overrides (``taskgate:limits:override``), which apply to any task. Every
measurement reads its times from the task records (``started_at``, ``finished_at``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, cast

import httpx
import redis

from bench.admission_report import Figures, write_report
from taskgate.records import keys

if TYPE_CHECKING:
    from bench.run import Report, Stack

TICKS = os.sysconf("SC_CLK_TCK")
MODULE = {"TASKGATE_TASK_MODULES": "bench.admission_tasks"}
NAP = "bench_nap"  # its Concurrency(limit=2, key="owner") is declared; None overrides it away
NAP_SECONDS = 0.05
B_TASKS = 10
FAIR_WINDOW = 4


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds (user + system) used by the processes ``roots`` and their descendants
    alive now (/proc)."""
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    tree, grew = set(roots), True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(used.get(pid, 0.0) for pid in tree)


def times(client: redis.Redis, ids: list[str], *fields: str) -> list[list[int | None]]:
    """Each run's ``fields`` (whole ms since the epoch; None when not set) from its record."""
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(keys.record(task_id), list(fields))
    rows = cast(list[list[bytes | None]], pipe.execute())
    return [[int(value) if value else None for value in row] for row in rows]


def override(client: redis.Redis, name: str, limits: dict[str, object] | None) -> None:
    """Set (or with None remove) the runtime override of task ``name``'s limits."""
    if limits is None:
        client.hdel(keys.LIMITS_OVERRIDE, name)
    else:
        client.hset(keys.LIMITS_OVERRIDE, name, json.dumps(limits))


def submit_batch(http: httpx.Client, name: str, items: list[dict[str, object]]) -> list[str]:
    ids: list[str] = []
    for offset in range(0, len(items), 500):
        answer = http.post(f"/tasks/{name}/batch", json={"items": items[offset:offset + 500]})
        answer.raise_for_status()
        ids += [task["task_id"] for task in answer.json()["tasks"]]
    return ids


def finish(http: httpx.Client, ids: list[str], seconds: float = 300) -> None:
    """Wait until every run of ``ids`` has succeeded (RuntimeError after ``seconds``)."""
    deadline = time.monotonic() + seconds
    for offset in range(0, len(ids), 1000):
        while True:
            answer = http.post("/tasks/results", json={"task_ids": ids[offset:offset + 1000], "wait": 30})
            if answer.status_code < 500 and answer.status_code != 429:  # a loaded machine's 503: ask again
                answer.raise_for_status()
                if all(task and task["state"] == "succeeded" for task in answer.json()["tasks"]):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(ids)} tasks did not all succeed within {seconds:.0f} s: "
                                   f"{answer.text[:500]}")


async def owners_submit(url: str, tmp: Path, backlog: int) -> tuple[float, list[str]]:
    """Owner A submits ``backlog`` naps, then owner B ``B_TASKS``: when B began, and B's ids."""
    from bench.admission_tasks import bench_nap
    from taskgate import Taskgate

    async with Taskgate(redis_url=url, data_dir=tmp / "library", auth=False):
        a, b = bench_nap.with_options(owner="owner-a"), bench_nap.with_options(owner="owner-b")
        for offset in range(0, backlog, 500):
            await asyncio.gather(*(a.submit(NAP_SECONDS) for _ in range(offset, min(backlog, offset + 500))))
        began = time.time()
        jobs = await asyncio.gather(*(b.submit(NAP_SECONDS) for _ in range(B_TASKS)))
    return began, [job.id for job in jobs]


def fairness(stack: Stack, client: redis.Redis, backlog: int, limited: bool, cap: float,
             fair_window: int = 0) -> float:
    """Seconds from B's submission to the start of B's last run (inf past ``cap`` seconds);
    ``fair_window``: with fair queueing by owner (what workers started with
    ``TASKGATE_FAIR_BY=owner`` write to ``taskgate:fair``), that window."""
    stack.reset_data(client)
    override(client, NAP, None if limited else {"concurrency": False})
    if fair_window:
        client.set(keys.FAIR, fair_window)
    began, ids = asyncio.run(owners_submit(stack.url, stack.tmp, backlog))
    deadline = time.monotonic() + cap
    while time.monotonic() < deadline:
        started = [row[0] for row in times(client, ids, "started_at")]
        if all(started):
            return max(cast(list[int], started)) / 1000 - began
        time.sleep(0.05)  # polling the records; the figure comes from their started_at
    return float("inf")


def end_to_end(stack: Stack, client: redis.Redis, http: httpx.Client, n: int,
               limits: dict[str, object] | None) -> float:
    """Tasks/s of ``n`` ``add`` runs submitted in batches and awaited (as section 2)."""
    stack.reset_data(client)
    override(client, "add", limits)
    began = time.perf_counter()
    finish(http, submit_batch(http, "add", [{"x": i, "y": 1} for i in range(n)]))
    return n / (time.perf_counter() - began)


def slot_gaps(stack: Stack, client: redis.Redis, http: httpx.Client, runs: int) -> tuple[list[float], int]:
    """``runs`` adds under concurrency 1: ms from each run's finished_at to the next's
    started_at, and how many runs overlapped the one before (0 when the limit held)."""
    stack.reset_data(client)
    override(client, "add", {"concurrency": 1})
    ids = submit_batch(http, "add", [{"x": i, "y": 1} for i in range(runs)])
    finish(http, ids)
    rows = sorted(cast(list[list[int]], times(client, ids, "started_at", "finished_at")))
    gaps = [float(nxt[0] - prev[1]) for prev, nxt in zip(rows, rows[1:], strict=False)]
    return gaps, sum(gap < 0 for gap in gaps)


def rate_run(stack: Stack, client: redis.Redis, http: httpx.Client, pids: list[int],
             seconds: int) -> tuple[list[int], float, float, float]:
    """``add`` at 50/s for ``seconds`` on the workers ``pids``: starts per 5 s window from the
    first start, and the workers' CPU (% of one core) during the window, then idle (the
    waiting runs removed) for as long (5 s at most); and the seconds from the first start to the
    last submit's answer."""
    stack.reset_data(client)
    override(client, "add", {"rate": [50, 1000, 1]})
    ids = submit_batch(http, "add", [{"x": i, "y": 1} for i in range(50 * (seconds + 10))])
    submitted = time.time()
    cpu, began = tree_cpu(pids), time.monotonic()
    time.sleep(seconds + 0.5)  # the measured window (its starts come from the records)
    busy = 100 * (tree_cpu(pids) - cpu) / (time.monotonic() - began)
    starts = sorted(row[0] for row in times(client, ids, "started_at") if row[0])
    if not starts:
        raise RuntimeError(f"no run of add started within {seconds} s under the rate limit")
    windows = [0] * (seconds // 5)
    for started in starts:
        window = (started - starts[0]) // 5000
        if window < len(windows):
            windows[window] += 1
    stack.reset_data(client)  # the runs still waiting never go
    cpu, began = tree_cpu(pids), time.monotonic()
    time.sleep(min(5, seconds))  # a measured idle spell: the workers' CPU with nothing to do
    idle = 100 * (tree_cpu(pids) - cpu) / (time.monotonic() - began)
    return windows, idle, busy, submitted - starts[0] / 1000


def admission_section(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    from bench.run import POST_LUA, redis_cpu, wrk

    quick = args.quick
    # quick (the smoke test): small sizes, and the rate run on the 2 workers already started
    backlog, contrast_cap, runs, rate_seconds = (100, 60.0, 10, 5) if quick else (5000, 240.0, 300, 30)
    client = redis.Redis.from_url(stack.url)
    api = stack.api  # the API the run started first (add's submits need no task module there)
    argv = [sys.executable, "-m", "taskgate", "worker", "--concurrency=2", "--log-level=warning"]

    def start(count: int, first: int) -> list[subprocess.Popen[bytes]]:
        with ThreadPoolExecutor(count) as pool:  # their probes waited on together
            return list(pool.map(lambda i: stack.worker(f"taskgate-worker-admission-{i}", argv, **MODULE),
                                 range(first, first + count)))

    workers = start(2, 0)
    fig = Figures(backlog=backlog, reps=args.reps, rate_seconds=rate_seconds, rate_workers=2 if quick else 4,
                  runs=runs, tasks=args.tasks, contrast_cap=contrast_cap, load=[os.getloadavg()[0]])
    fig.fair = [fairness(stack, client, backlog, True, 60.0) for _ in range(args.reps)]
    fig.commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).parent,
                                capture_output=True, text=True).stdout.strip() or "unknown"
    fig.unfair = fairness(stack, client, backlog, False, contrast_cap)
    # no per-task limit, fair queueing by owner with a window of the workers' 4 processes
    fig.fair_by = [fairness(stack, client, backlog, False, 60.0, FAIR_WINDOW) for _ in range(args.reps)]
    variants: dict[str, dict[str, object] | None] = {
        "none": None, "concurrency": {"concurrency": 10_000}, "rate": {"rate": [1_000_000, 1000, 1_000_000]}}
    e2e: dict[str, list[float]] = {name: [] for name in variants}
    with httpx.Client(base_url=api, timeout=120) as http:
        for rep in range(args.reps):  # the variants in turn, each repetition starting with the next
            names = list(variants)[rep % 3:] + list(variants)[:rep % 3]
            for name in names:
                e2e[name].append(end_to_end(stack, client, http, args.tasks, variants[name]))
            rep_gaps, overlaps = slot_gaps(stack, client, http, runs)
            fig.gaps.append(rep_gaps)
            fig.overlaps += overlaps
        if not quick:
            workers += start(2, 2)
        fig.windows, fig.idle_cpu, fig.busy_cpu, fig.submitting = rate_run(
            stack, client, http, [proc.pid for proc in workers], rate_seconds)
    fig.e2e = e2e
    for proc in workers:
        stack.stop(proc)
    # The submit path, workers stopped (as section 1): no limit anywhere, then another task limited.
    lpush = stack.uvicorn("lpush-admission", "lpush_app", "/lpush")
    post = stack.tmp / "admission-post.lua"
    post.write_text(POST_LUA)
    targets = [("lpush", f"{lpush}/lpush", None, False), ("get", f"{api}/add?x=1&y=2", None, False),
               ("get_limited", f"{api}/add?x=1&y=2", None, True), ("post", f"{api}/tasks/add", post, False),
               ("post_limited", f"{api}/tasks/add", post, True)]
    fig.rps = {name: [] for name, _, _, _ in targets}
    fig.redis_us = {name: [] for name, _, _, _ in targets}
    for rep in range(args.reps):  # each pair in one order, then the other
        for name, url, lua, limited in targets if rep % 2 == 0 else targets[:1] + targets[:0:-1]:
            stack.reset_data(client)
            if limited:  # bench_nap limited by its declaration and an override
                client.hset(keys.LIMITS_DECLARED, NAP, '{"concurrency":2}')
                override(client, NAP, {"concurrency": 1, "rate": [10, 1000, 1]})
            cpu = redis_cpu(client)
            result = wrk(url, args.duration, lua)
            fig.rps[name].append(result["rps"])
            requests = max(1.0, result["rps"] * args.duration)
            fig.redis_us[name].append((redis_cpu(client) - cpu) / requests * 1e6)
    client.close()
    fig.load.append(os.getloadavg()[0])
    write_report(report, fig)

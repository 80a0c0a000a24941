"""Section 14 of ``make bench``: ``taskgate api --workers 2`` against one process on ``GET /add``.

Each repetition runs wrk (-t2 -c32) on one ``taskgate api --no-access-log`` and on one
``taskgate api --no-access-log --workers 2``, started afresh in turn on the same private Valkey
with no worker (submits only, the queue emptied between runs), and reads the CPU every process
of that API used over the run from /proc (the supervisor, its children and multiprocessing's
resource tracker). The ratio is paired per repetition: the machine's load drifts."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from bench.run import Report, Stack


def tree(pid: int) -> list[int]:
    """``pid`` and every live process below it (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo.extend(int(child) for child in (task / "children").read_text().split())
            except OSError:
                continue
    return found


def submits_by_pid(directory: Path) -> dict[int, float]:
    """``taskgate_tasks_submitted_total`` as each API process wrote it in its multiprocess directory."""
    from prometheus_client.mmap_dict import MmapedDict

    found: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        found[int(path.stem.removeprefix("counter_"))] = sum(
            value for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))
            if '"taskgate_tasks_submitted_total"' in key)
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and the processes below it."""
    from bench.concurrency import process_cpu

    total = 0.0
    for member in tree(pid):
        try:
            total += process_cpu(member)
        except OSError:
            continue  # ended meanwhile
    return total


@dataclass
class Row:
    """One API shape's figures, one entry per repetition."""

    name: str
    workers: int
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # API CPU per request, ms
    cores: list[float] = field(default_factory=list)  # API CPU seconds per wall second
    busiest: list[float] = field(default_factory=list)  # the busiest process's share of the submits
    non2xx: float = 0.0


def measure(stack: Stack, row: Row, duration: int, connection: redis.Redis) -> None:
    """Start the API shape of ``row``, warm it up, measure one wrk run, stop it."""
    from bench.run import wrk

    argv = [sys.executable, "-m", "taskgate", "api", "--log-level=warning", "--no-access-log",
            f"--workers={row.workers}"]
    metrics, env = stack.tmp / f"metrics-{row.workers}p", {}
    if row.workers > 1:  # the directory is emptied by the API as it starts
        metrics.mkdir(exist_ok=True)  # the client needs it from the first import
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    proc, base = stack.http(f"taskgate-api-{row.workers}p", argv, "/healthz", **env)
    try:
        expected = row.workers + 1 if row.workers > 1 else 0  # the servers and the resource tracker
        if len(tree(proc.pid)) - 1 != expected:
            raise RuntimeError(f"--workers {row.workers}: {len(tree(proc.pid)) - 1} child processes")
        wrk(f"{base}/add?x=1&y=2", 1)  # every child has served (and imported its lazy paths)
        before, counted = tree_cpu(proc.pid), submits_by_pid(metrics)
        out = wrk(f"{base}/add?x=1&y=2", duration)
        used = tree_cpu(proc.pid) - before
        served = [after - counted.get(pid, 0.0) for pid, after in submits_by_pid(metrics).items()]
    finally:
        stack.stop(proc)
        stack.reset_data(connection)
    requests = out["rps"] * duration
    row.rps.append(out["rps"])
    row.p50.append(out["p50"])
    row.p99.append(out["p99"])
    row.cpu_ms.append(1000 * used / requests)
    row.cores.append(used / duration)
    row.busiest.append(max(served) / sum(served) if sum(served) else 1.0)
    row.non2xx += out["non2xx"]


def multiproc_section(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    from bench.run import fmt, median

    rows = [Row("`taskgate api` (one process)", 1), Row("`taskgate api --workers 2`", 2)]
    with redis.Redis.from_url(stack.url) as connection:
        for rep in range(args.reps):
            for row in rows if rep % 2 == 0 else reversed(rows):  # alternate which runs first
                measure(stack, row, args.duration, connection)
    ratios = [two / one for one, two in zip(rows[0].rps, rows[1].rps, strict=True)]
    cpu_ratios = [two / one for one, two in zip(rows[0].cpu_ms, rows[1].cpu_ms, strict=True)]
    report.add(f"## 14. Several API processes: `taskgate api --workers 2` against one process "
               f"({args.reps} repetitions)")
    report.add()
    report.add(f"`GET /add` with wrk (-t2 -c32, {args.duration} s, after a 1 s warm-up) on a fresh "
               "`taskgate api --no-access-log`, then on a fresh `taskgate api --no-access-log --workers 2` "
               "(uvicorn's supervisor, one listening socket shared by two spawned children, metrics in "
               "prometheus-client's multiprocess mode), alternating which goes first; the same private "
               "Valkey, no worker (the queue emptied after each run). API CPU: user + system seconds of "
               "every process of that API over the wrk run, from /proc, per request and per wall second "
               "(cores busy). Busiest process: its share of the run's submits, from the per-process files "
               "of the metrics' multiprocess directory (wrk keeps its 32 connections open, so the split "
               f"is set as they connect). This machine has {os.cpu_count()} cores, shared by wrk's 2 "
               "threads, Valkey "
               "and the API: a second API process can only take what those leave. Each cell: "
               "**median** (every repetition).")
    report.add()
    report.table(["API", "req/s", "p50 ms", "p99 ms", "API CPU ms / request", "API cores busy",
                  "busiest process", "non-2xx"],
                 [[row.name, fmt(row.rps), fmt(row.p50, 2), fmt(row.p99, 2), fmt(row.cpu_ms, 3),
                   fmt(row.cores, 2), fmt([100 * share for share in row.busiest]) + " %",
                   f"{row.non2xx:.0f}"] for row in rows])
    report.add(f"`--workers 2` / one process, paired per repetition: req/s **{median(ratios):.2f}x** "
               f"({', '.join(f'{r:.2f}' for r in ratios)}); API CPU per request **{median(cpu_ratios):.2f}x** "
               f"({', '.join(f'{r:.2f}' for r in cpu_ratios)}).")
    report.add()
    report.add("`python -m bench.run --only multiproc` runs this section alone.")
    report.add()

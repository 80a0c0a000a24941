"""Section 15 of ``make bench``: workflows (issue 26's "Measured").

One ``taskgate api`` and one ``taskgate worker --concurrency=2`` with the trivial tasks of
``bench.workflow_tasks``, and a plain ``celery worker -c 2`` of the tutorial's app (bench/apps.py),
all on the run's private Valkey. Each repetition, in an order that turns by one each time:

* **fan-out/fan-in**: ``POST /workflows`` of ``numbers(count=N)`` -> a map of ``square`` over
  its list -> ``total`` of their results, timed from the submit to the sink's result
  (``GET /tasks/{id}?wait=``);
* **batch**: the same N ``square`` runs in one ``POST /tasks/square/batch``, timed from the
  submit until ``POST /tasks/results`` (``wait``) has every one ended;
* **chord**: Celery's own ``chord`` of N ``square`` with a ``total`` callback (Redis result
  backend), timed from ``apply_async`` to the callback's ``get()``.

Then a chain of C ``add`` nodes (each adds 1 to its parent's result): from each parent's end
to its child's start, from the records' ``finished_at`` and ``started_at`` (whole ms). And the
Redis bytes a fan-out's records take (``MEMORY USAGE``: every run's record and the workflow's
hash), against a batch run's record.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import redis

from taskgate.records import keys

if TYPE_CHECKING:
    from bench.run import Report, Stack

MODULE = {"TASKGATE_TASK_MODULES": "bench.workflow_tasks"}
TERMINAL = ("succeeded", "failed", "cancelled", "expired")
#: The issue's floor: the fan-out's speed against the same runs as a batch.
TARGET = 0.8


@dataclass
class Figures:
    """Each figure, one entry per repetition (``gaps``: every edge of every chain, ms)."""

    items: int
    chain: int
    workflow: list[float] = field(default_factory=list)  # seconds, submit to the sink's result
    batch: list[float] = field(default_factory=list)  # seconds, submit to the last result
    chord: list[float] = field(default_factory=list)  # seconds, apply_async to the callback's result
    gaps: list[list[float]] = field(default_factory=list)
    run_bytes: list[float] = field(default_factory=list)  # per run of a fan-out, workflow hash shared
    hash_bytes: list[float] = field(default_factory=list)  # the workflow's hash
    batch_bytes: list[float] = field(default_factory=list)  # per batch run's record
    load: list[float] = field(default_factory=list)


def ended(http: httpx.Client, task_id: str) -> dict[str, Any]:
    """The task once it ended (``?wait=`` in steps of 30 s, at most 5 minutes)."""
    for _ in range(10):
        answer = http.get(f"/tasks/{task_id}", params={"wait": 30}, timeout=40)
        answer.raise_for_status()
        task: dict[str, Any] = answer.json()
        if task["state"] in TERMINAL:
            return task
    raise RuntimeError(f"task {task_id} did not end: {task}")


def fan_out(http: httpx.Client, items: int) -> tuple[float, dict[str, Any]]:
    """Seconds from POST /workflows to the sink's result, and the submit's answer."""
    nodes = {"count": {"task": "numbers", "arguments": {"count": items}},
             "squares": {"map": {"over": {"$result": "count"}, "task": "square", "argument": "n"}},
             "sum": {"task": "total", "arguments": {"values": {"$result": "squares"}}}}
    began = time.perf_counter()
    answer = http.post("/workflows", json={"name": "bench-fan-out", "nodes": nodes})
    if answer.status_code != 202:
        raise RuntimeError(f"POST /workflows: {answer.status_code} {answer.text}")
    body: dict[str, Any] = answer.json()
    sink = ended(http, body["tasks"]["sum"])
    seconds = time.perf_counter() - began
    if sink["state"] != "succeeded" or sink["result"] != sum(n * n for n in range(items)):
        raise RuntimeError(f"the fan-out's sink: {sink}")
    return seconds, body


def batch(http: httpx.Client, items: int) -> tuple[float, list[str]]:
    """Seconds from POST /tasks/square/batch to every run ended (POST /tasks/results, wait)."""
    began = time.perf_counter()
    answer = http.post("/tasks/square/batch", json={"items": [{"n": n} for n in range(items)]})
    if answer.status_code != 202:
        raise RuntimeError(f"POST /tasks/square/batch: {answer.status_code} {answer.text}")
    ids = [outcome["task_id"] for outcome in answer.json()["tasks"]]
    for _ in range(10):
        results = http.post("/tasks/results", json={"task_ids": ids, "wait": 30}, timeout=40)
        results.raise_for_status()
        tasks = results.json()["tasks"]
        if all(task is not None and task["state"] in TERMINAL for task in tasks):
            seconds = time.perf_counter() - began
            if [task["result"] for task in tasks] != [n * n for n in range(items)]:
                raise RuntimeError("the batch's results are not the squares")
            return seconds, ids
    raise RuntimeError("the batch did not end")


def chord_round(items: int) -> float:
    """Seconds from Celery's ``chord(...)(total.s())`` to its callback's result."""
    from celery import chord

    from bench.apps import square, total

    began = time.perf_counter()
    result = chord(square.s(n) for n in range(items))(total.s())
    value = result.get(timeout=300)
    seconds = time.perf_counter() - began
    if value != sum(n * n for n in range(items)):
        raise RuntimeError(f"the chord's callback: {value}")
    return seconds


def chain_gaps(http: httpx.Client, client: redis.Redis, length: int) -> list[float]:
    """A chain of ``length`` ``add`` nodes: ms from each parent's end to its child's start."""
    nodes: dict[str, Any] = {"a0": {"task": "add", "arguments": {"x": 0, "y": 1}}}
    for i in range(1, length):
        nodes[f"a{i}"] = {"task": "add", "arguments": {"x": {"$result": f"a{i - 1}"}, "y": 1}}
    answer = http.post("/workflows", json={"name": "bench-chain", "nodes": nodes})
    if answer.status_code != 202:
        raise RuntimeError(f"POST /workflows: {answer.status_code} {answer.text}")
    tasks = answer.json()["tasks"]
    sink = ended(http, tasks[f"a{length - 1}"])
    if sink["result"] != length:
        raise RuntimeError(f"the chain's sink: {sink}")
    with client.pipeline(transaction=False) as pipe:
        for i in range(length):
            pipe.hmget(keys.record(tasks[f"a{i}"]), ["started_at", "finished_at"])
        stamps = [(int(started), int(finished)) for started, finished in pipe.execute()]
    return [float(stamps[i][0] - stamps[i - 1][1]) for i in range(1, length)]


def memory(client: redis.Redis, names: list[str]) -> list[int]:
    """``MEMORY USAGE`` of each key (exact: SAMPLES 0)."""
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.execute_command("MEMORY", "USAGE", name, "SAMPLES", "0")
        return [int(size or 0) for size in pipe.execute()]


def fan_out_bytes(client: redis.Redis, body: dict[str, Any], items: int) -> tuple[float, float]:
    """Bytes per run of a fan-out (records and the workflow's hash, shared), and the hash's."""
    tasks = body["tasks"]
    runs = [tasks["count"], tasks["sum"], *(f"{tasks['squares']}-{i}" for i in range(items))]
    records = sum(memory(client, [keys.record(task_id) for task_id in runs]))
    (workflow,) = memory(client, [keys.workflow(body["workflow_id"])])
    return (records + workflow) / len(runs), float(workflow)


def workflows_section(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    from bench.apps import celery_app

    fig = Figures(items=100 if args.quick else 1000, chain=20 if args.quick else 200, load=[os.getloadavg()[0]])
    client = redis.Redis.from_url(stack.url)
    api_proc, api = stack.http("taskgate-api-workflows", [sys.executable, "-m", "taskgate", "api", "--log-level=warning",
                                                   "--no-access-log"], "/healthz", **MODULE)
    worker = stack.worker("taskgate-worker-workflows", [sys.executable, "-m", "taskgate", "worker",
                                                        "--concurrency=2", "--log-level=warning"], **MODULE)
    raw = stack.worker("celery-worker-chord", [sys.executable, "-m", "celery", "-A", "bench.apps:celery_app",
                                               "worker", "-c", "2", "--without-gossip", "--without-mingle",
                                               "-l", "warning"])
    try:
        with httpx.Client(base_url=api, timeout=60) as http:
            fan_out(http, 10)  # warm: the scripts loaded, the processes' imports done
            chord_round(10)
            rounds = ["workflow", "batch", "chord"]
            for rep in range(args.reps):
                for name in rounds[rep % 3:] + rounds[:rep % 3]:
                    if name == "workflow":
                        seconds, body = fan_out(http, fig.items)
                        fig.workflow.append(seconds)
                        per_run, whole = fan_out_bytes(client, body, fig.items)
                        fig.run_bytes.append(per_run)
                        fig.hash_bytes.append(whole)
                    elif name == "batch":
                        seconds, ids = batch(http, fig.items)
                        fig.batch.append(seconds)
                        fig.batch_bytes.append(sum(memory(client, [keys.record(i) for i in ids])) / len(ids))
                    else:
                        fig.chord.append(chord_round(fig.items))
                fig.gaps.append(chain_gaps(http, client, fig.chain))
    finally:
        for proc in (worker, raw, api_proc):
            stack.stop(proc)
        celery_app.close()
    fig.load.append(os.getloadavg()[0])
    stack.reset_data(client)
    client.close()
    write_report(report, fig)


def write_report(report: Report, fig: Figures) -> None:
    from bench.run import fmt, median, percentile

    n = fig.items
    speed = median(fig.batch) / median(fig.workflow)
    report.add(f"## 15. Workflows: a {n:,}-item fan-out/fan-in, a chain, their Redis bytes "
               f"({len(fig.workflow)} repetitions)")
    report.add()
    report.add(f"One `taskgate worker --concurrency=2` and a plain `celery worker -c 2` (the tutorial's app: "
               f"early acks, prefetch 4, Redis result backend) on the same Valkey, each idle while the other "
               f"runs; trivial tasks. Each repetition runs the three in an order that turns by one. Machine "
               f"load (1 min) {fig.load[0]:.1f} at the start, {fig.load[-1]:.1f} at the end: on a shared "
               f"machine the absolute numbers are provisional, the ratios within one run are the figures.")
    report.add()
    report.table(["path", "seconds, submit to result", "runs/s", "speed vs the batch"], [
        [f"`POST /workflows`: `numbers` -> map `square` -> `total` ({n + 2:,} runs)", fmt(fig.workflow, 2),
         f"{(n + 2) / median(fig.workflow):.0f}", f"**{speed:.2f}x** (target >= {TARGET}x: "
         f"{'met' if speed >= TARGET else 'missed'})"],
        [f"`POST /tasks/square/batch` of {n:,}, awaited (`POST /tasks/results`)", fmt(fig.batch, 2),
         f"{n / median(fig.batch):.0f}", "1.00x"],
        [f"Celery `chord` of {n:,} `square` -> `total` ({n + 1:,} runs)", fmt(fig.chord, 2),
         f"{(n + 1) / median(fig.chord):.0f}", f"{median(fig.batch) / median(fig.chord):.2f}x"],
    ])
    report.add("Speed vs the batch: the batch's median seconds over the path's (above 1: faster). The "
               "fan-out also runs `numbers` before the map and `total` after it, one at a time (its "
               f"worker reads the {n:,} results `total` is given); Celery's chord is sent by the "
               "caller, one message per task, and counted in by its result backend.")
    report.add()
    pooled = [gap for gaps in fig.gaps for gap in gaps]
    report.add(f"From a parent's end to its child's start, a chain of {fig.chain} `add` nodes (each adds 1 to "
               "its parent's result), from the records' `finished_at` and `started_at` (whole ms): the "
               "child is queued in the script that ends its parent, then taken by the worker's free process.")
    report.add()
    report.table(["repetition", "p50 ms", "p99 ms", "max ms"],
                 [*([str(i + 1), f"{median(gaps):.0f}", f"{percentile(gaps, 0.99):.0f}", f"{max(gaps):.0f}"]
                    for i, gaps in enumerate(fig.gaps)),
                  ["all", f"**{median(pooled):.0f}**", f"**{percentile(pooled, 0.99):.0f}**", f"{max(pooled):.0f}"]])
    report.add("Redis bytes (`MEMORY USAGE`, SAMPLES 0) once the workflow ended: every run's record and "
               "the workflow's hash (the graph's state, its spec and each node's fields), per run; a "
               "batch run's record for contrast. The indexes' entries (about the same per run either "
               "way) are not counted.")
    report.add()
    report.table(["what", "bytes"], [
        [f"per run of the fan-out ({n + 2:,} runs, workflow hash shared)", fmt(fig.run_bytes)],
        ["the workflow's hash", fmt(fig.hash_bytes)],
        ["per run of the batch (its record)", fmt(fig.batch_bytes)],
    ])

"""Section 16 of ``make bench``: webhooks (issue 27's "Measured").

One ``taskgate api`` and one ``taskgate worker --concurrency=2`` (its deliverer process the only
sender) on the run's private Valkey, both with ``TASKGATE_WEBHOOK_ALLOW_HTTP`` and
``TASKGATE_WEBHOOK_ALLOW_PRIVATE`` on (the receiver is plain http on 127.0.0.1), and a local
receiver answering 200 at once (bench/webhook_receiver.py, a process of its own). The
subscriptions are made with ``POST /webhooks`` (events ``task.succeeded``, every task):

* **deliveries per second**: E ``add`` tasks submitted in batches of 500 with one subscription;
  from the first delivery's arrival to the last, and from the first submit to the last arrival;
  the runs' own end rate (their records' ``finished_at``) beside it;
* **task end to delivery**: each delivery's arrival against its run's ``finished_at`` (whole ms),
  for those E runs, and for K runs one at a time (each delivered before the next is submitted);
* **with one subscription against none**, alternating, the order turned each repetition: the
  submit path (wrk -t2 -c32 on ``GET /add``, worker stopped, the queue emptied before each run)
  and N ``add`` tasks through HTTP to their results (batches of 500, ``POST /tasks/results``);
  a run with the subscription waits for its deliveries to arrive (untimed) before the next.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import redis

from bench.webhook_receiver import Receiver
from taskgate.records import keys

if TYPE_CHECKING:
    from bench.run import Report, Stack

#: The API's and the worker's environment: the receiver is http on loopback.
ALLOW = {"TASKGATE_WEBHOOK_ALLOW_HTTP": "1", "TASKGATE_WEBHOOK_ALLOW_PRIVATE": "1"}
#: The issue's floor: with one subscription against none (submit path and end to end).
TARGET = 0.9


@dataclass
class Figures:
    """Each figure, one entry per repetition (the endings' lists: one entry per delivery)."""

    endings: int
    single: int
    tasks: int
    delivery_rate: float = 0.0  # deliveries/s, first arrival to last
    delivery_total: float = 0.0  # deliveries/s, first submit to last arrival
    end_rate: float = 0.0  # the same runs' ends/s, first finished_at to last
    lag: float = 0.0  # seconds from the last run's end to the last arrival
    duplicates: int = 0
    loaded: list[float] = field(default_factory=list)  # ms, finished_at to arrival, under load
    alone: list[float] = field(default_factory=list)  # ms, one run at a time
    submit: dict[str, list[float]] = field(default_factory=lambda: {"none": [], "one": []})  # req/s
    e2e: dict[str, list[float]] = field(default_factory=lambda: {"none": [], "one": []})  # tasks/s
    load: list[float] = field(default_factory=list)
    #: µs of CPU per task in the end-to-end runs, by part, without and with the subscription
    cpu: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def subscribe(http: httpx.Client, url: str) -> str:
    answer = http.post("/webhooks", json={"url": url, "events": ["task.succeeded"], "description": "bench"})
    if answer.status_code != 201:
        raise RuntimeError(f"POST /webhooks: {answer.status_code} {answer.text}")
    return str(answer.json()["id"])


def unsubscribe(http: httpx.Client, webhook_id: str) -> None:
    http.delete(f"/webhooks/{webhook_id}").raise_for_status()


def submit_adds(http: httpx.Client, n: int) -> list[str]:
    """N ``add`` tasks submitted through HTTP, in batches of 500: their ids."""
    ids: list[str] = []
    for offset in range(0, n, 500):
        items = [{"x": i, "y": 1} for i in range(offset, min(n, offset + 500))]
        answer = http.post("/tasks/add/batch", json={"items": items})
        if answer.status_code != 202:
            raise RuntimeError(f"POST /tasks/add/batch: {answer.status_code} {answer.text}")
        ids += [task["task_id"] for task in answer.json()["tasks"]]
    return ids


def run_tasks(http: httpx.Client, n: int) -> tuple[float, list[str]]:
    """N ``add`` tasks through HTTP (batches of 500) to their results: (the seconds, their ids)."""
    began = time.perf_counter()
    ids = submit_adds(http, n)
    for offset in range(0, n, 1000):
        chunk = ids[offset:offset + 1000]
        for _ in range(20):
            tasks = http.post("/tasks/results", json={"task_ids": chunk, "wait": 30}, timeout=40).json()["tasks"]
            if all(task and task["state"] == "succeeded" for task in tasks):
                break
        else:
            raise RuntimeError("the tasks did not end")
    return time.perf_counter() - began, ids


def finished_ms(client: redis.Redis, task_ids: list[str]) -> dict[str, int]:
    """Each run's ``finished_at`` (unix ms) from its record."""
    with client.pipeline(transaction=False) as pipe:
        for task_id in task_ids:
            pipe.hget(keys.record(task_id), "finished_at")
        return {task_id: int(value) for task_id, value in zip(task_ids, pipe.execute(), strict=True)}


def task_of(msg_id: str) -> str:
    """The run of a task event's ``webhook-id`` (``msg_<task id>_<state>``)."""
    return msg_id.removeprefix("msg_").rsplit("_", 1)[0]


def endings(fig: Figures, http: httpx.Client, client: redis.Redis, receiver: Receiver) -> None:
    """Deliveries per second and end-to-delivery times at ``fig.endings`` runs, one subscription."""
    webhook_id = subscribe(http, receiver.url)
    start = receiver.count()
    began = time.time()
    _, ids = run_tasks(http, fig.endings)
    receiver.wait_for(start + fig.endings, 600)
    unsubscribe(http, webhook_id)
    arrivals = receiver.since(start)
    ends = finished_ms(client, ids)
    first, last = arrivals[0][0], max(at for at, _ in arrivals)
    fig.delivery_rate = (len(arrivals) - 1) / max(last - first, 1e-9)
    fig.delivery_total = len(arrivals) / (last - began)
    fig.end_rate = (len(ends) - 1) / max((max(ends.values()) - min(ends.values())) / 1000, 1e-9)
    fig.lag = last - max(ends.values()) / 1000
    seen: set[str] = set()
    for at, msg_id in arrivals:
        if msg_id in seen:
            fig.duplicates += 1
            continue
        seen.add(msg_id)
        fig.loaded.append(at * 1000 - ends[task_of(msg_id)])


def one_at_a_time(fig: Figures, http: httpx.Client, client: redis.Redis, receiver: Receiver) -> None:
    """End-to-delivery times of ``fig.single`` runs, each delivered before the next is submitted,
    after a pause drawn from 0 to 0.3 s: without it the loop falls in step with the sender's poll
    (each delivery's end wakes the sender, which finds nothing due and waits a whole
    ``worker.webhooks.TICK``, which the next run's end then always waits out)."""
    webhook_id = subscribe(http, receiver.url)
    for i in range(fig.single):
        time.sleep(random.uniform(0, 0.3))  # the next end at a random point of the sender's poll
        task_id = http.post("/tasks/add", json={"x": i, "y": 1}).json()["task_id"]
        at = receiver.wait_for_id(f"msg_{task_id}_succeeded", 30)
        fig.alone.append(at * 1000 - finished_ms(client, [task_id])[task_id])
    unsubscribe(http, webhook_id)


def submit_path(fig: Figures, args: argparse.Namespace, stack: Stack, api: str, http: httpx.Client,
                client: redis.Redis, receiver: Receiver) -> None:
    """wrk on ``GET /add`` with no subscription and with one, alternating (worker stopped)."""
    from bench.run import wrk

    for rep in range(args.reps):
        for case in ("none", "one") if rep % 2 == 0 else ("one", "none"):
            stack.reset_data(client)  # our private server, no worker: an empty queue each run
            if case == "one":
                subscribe(http, receiver.url)
            fig.submit[case].append(wrk(f"{api}/add?x=1&y=2", args.duration)["rps"])
    stack.reset_data(client)


#: Clock ticks a second, the unit of /proc's CPU times.
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of(stat: Path) -> float:
    """CPU seconds (user and system) a process or thread used so far, from its /proc stat file."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def components(worker: subprocess.Popen[bytes], api: subprocess.Popen[bytes], redis_pid: int,
               receiver: Receiver) -> dict[str, list[Path]]:
    """The stat files of what runs during the end-to-end runs, by part: the worker's main
    process, its pool, its webhook deliverer, the API, Redis and the receiver."""
    parts: dict[str, list[Path]] = {"worker (main)": [Path(f"/proc/{worker.pid}/stat")], "worker (pool)": [],
                                    "webhook deliverer": [], "API": [Path(f"/proc/{api.pid}/stat")],
                                    "Redis": [Path(f"/proc/{redis_pid}/stat")],
                                    "receiver (its process)": [Path(f"/proc/{receiver.pid}/stat")]}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == worker.pid:
            parts["webhook deliverer" if b"webhook_process" in cmdline else "worker (pool)"].append(entry / "stat")
    return parts


def end_to_end(fig: Figures, args: argparse.Namespace, http: httpx.Client, receiver: Receiver,
               parts: dict[str, list[Path]]) -> None:
    """N tasks to their results with no subscription and with one, alternating; the CPU each
    part used meanwhile."""
    for rep in range(args.reps):
        for case in ("none", "one") if rep % 2 == 0 else ("one", "none"):
            webhook_id = subscribe(http, receiver.url) if case == "one" else ""
            start = receiver.count()
            before = {part: sum(map(cpu_of, stats)) for part, stats in parts.items()}
            seconds, _ = run_tasks(http, fig.tasks)
            for part, stats in parts.items():  # µs of CPU per task while the tasks ran
                used = sum(map(cpu_of, stats)) - before[part]
                fig.cpu.setdefault(part, {"none": [], "one": []})[case].append(used / fig.tasks * 1e6)
            fig.e2e[case].append(fig.tasks / seconds)
            if webhook_id:
                receiver.wait_for(start + fig.tasks, 600)  # delivered before the next run
                unsubscribe(http, webhook_id)


def webhooks_section(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    from bench.run import free_port

    fig = Figures(endings=100 if args.quick else 5000, single=10 if args.quick else 100, tasks=args.tasks,
                  load=[os.getloadavg()[0]])
    client = redis.Redis.from_url(stack.url)
    receiver = Receiver()
    receiver.start(free_port())
    api_proc, api = stack.http("taskgate-api-webhooks", [sys.executable, "-m", "taskgate", "api",
                                                         "--log-level=warning", "--no-access-log"], "/healthz", **ALLOW)
    worker = None
    try:
        with httpx.Client(base_url=api, timeout=60) as http:
            submit_path(fig, args, stack, api, http, client, receiver)
            worker = stack.worker("taskgate-worker-webhooks", [sys.executable, "-m", "taskgate", "worker",
                                                               "--concurrency=2", "--log-level=warning"], **ALLOW)
            endings(fig, http, client, receiver)
            one_at_a_time(fig, http, client, receiver)
            end_to_end(fig, args, http, receiver, components(worker, api_proc, stack.valkey._process.pid, receiver))
    finally:
        for proc in (worker, api_proc):
            if proc is not None:
                stack.stop(proc)
        receiver.stop()
    fig.load.append(os.getloadavg()[0])
    stack.reset_data(client)
    client.close()
    write_report(report, fig, args)


def write_report(report: Report, fig: Figures, args: argparse.Namespace) -> None:
    from bench.run import fmt, median, percentile

    def ratio(runs: dict[str, list[float]]) -> str:
        value = median(runs["one"]) / median(runs["none"])
        return f"**{value:.2f}x** (target >= {TARGET}x: {'met' if value >= TARGET else 'missed'})"

    report.add(f"## 16. Webhooks: {fig.endings:,} task endings delivered, end to delivery, one subscription "
               f"against none ({args.reps} repetitions)")
    report.add()
    report.add("One `taskgate api` and one `taskgate worker --concurrency=2` (its deliverer, a process beside "
               "the worker's main process at nice +10, the only sender: at most 4 sends in flight per "
               "subscription), both with `TASKGATE_WEBHOOK_ALLOW_HTTP` "
               "and `TASKGATE_WEBHOOK_ALLOW_PRIVATE` on, and a receiver (uvicorn, a process of its own) "
               "answering 200 at once; subscriptions made with `POST /webhooks` (events "
               f"`task.succeeded`). Machine load (1 min) {fig.load[0]:.1f} at the start, {fig.load[-1]:.1f} at "
               "the end: on a shared machine the absolute numbers are provisional, the ratios within one run "
               "are the figures.")
    report.add()
    report.table(["figure", "value"], [
        [f"deliveries/s, first arrival to last ({fig.endings:,} runs of `add`, batches of 500)",
         f"**{fig.delivery_rate:.0f}**"],
        ["deliveries/s, first submit to last arrival", f"{fig.delivery_total:.0f}"],
        ["the same runs' ends/s (first `finished_at` to last)", f"{fig.end_rate:.0f}"],
        ["last run's end to last arrival", f"{fig.lag:.2f} s"],
        ["deliveries received twice", f"{fig.duplicates}"],
    ])
    rows = [(f"the {fig.endings:,} runs above (submitted in batches)", fig.loaded),
            (f"{fig.single} runs one at a time (each delivered, then a pause of 0-0.3 s)", fig.alone)]
    report.add("From a run's end (its record's `finished_at`, whole ms) to its delivery's arrival at the receiver. "
               "An idle sender is woken by the end script when a delivery becomes due while none was (a "
               "PUBLISH), so runs one at a time wait only for the send; the batched runs wait behind the ones "
               "before them, and, the sender running at a lower CPU priority than the worker, for the "
               "worker's room.")
    report.add()
    report.table(["runs", "p50 ms", "p99 ms", "max ms"],
                 [[name, f"**{median(values):.0f}**", f"**{percentile(values, 0.99):.0f}**", f"{max(values):.0f}"]
                  for name, values in rows])
    report.add(f"With one subscription against none, alternating (the order turned each repetition): the submit "
               f"path (wrk -t2 -c32 -d{args.duration}s on `GET /add`, worker stopped, the queue emptied before "
               f"each run) and {fig.tasks:,} `add` tasks through HTTP to their results (batches of 500, "
               "`POST /tasks/results`; a run with the subscription waits, untimed, for its deliveries before "
               "the next). Each cell: **median** (every repetition).")
    report.add()
    report.table(["path", "no subscription", "one subscription", "one vs none"], [
        ["submit `GET /add` (req/s)", fmt(fig.submit["none"]), fmt(fig.submit["one"]), ratio(fig.submit)],
        ["end to end (tasks/s)", fmt(fig.e2e["none"]), fmt(fig.e2e["one"]), ratio(fig.e2e)],
    ])
    report.add("Where the CPU went in those end-to-end runs, by part: µs of CPU per task while the tasks ran "
               "(user and system time from /proc; the deliveries still under way when the last task ended are "
               "not counted), **median** (every repetition). The machine has 2 cores for all of them and the "
               "bench's own client.")
    report.add()
    rows = [[part, fmt(runs["none"]), fmt(runs["one"]),
             f"{median(runs['one']) - median(runs['none']):+.0f}"] for part, runs in fig.cpu.items()]
    both = {case: [sum(values) for values in zip(*(runs[case] for runs in fig.cpu.values()), strict=True)]
            for case in ("none", "one")} if fig.cpu else {"none": [0.0], "one": [0.0]}
    rows.append(["all of these", fmt(both["none"]), fmt(both["one"]), f"{median(both['one']) - median(both['none']):+.0f}"])
    report.table(["part", "no subscription (µs/task)", "one subscription (µs/task)", "difference"], rows)

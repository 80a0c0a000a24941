"""Section 8 of ``make bench``: schedules. What a keeper's check costs Redis as the number of
schedules grows (one indexed lookup of the due ones, never a scan), what a pass that fires 100
due schedules costs, and how late runs are queued after their tick with a worker up."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING

import httpx
import redis

if TYPE_CHECKING:
    from bench.run import Report, Stack


def _command_usec(client: redis.Redis, command: str) -> tuple[int, int]:
    """(calls, total microseconds) Redis spent in ``command`` so far (INFO commandstats)."""
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def keeper_costs(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    """Redis time of one keeper check with 100 and 10,000 schedules (none due), and of a pass
    firing 100 due ones, measured in Redis itself (commandstats) and as wall time here."""
    from taskgate.config import Settings
    from taskgate.records import keys, scripts
    from taskgate.worker.celery_app import create_celery_app
    from taskgate.worker.scheduler import Firer, ms

    client = redis.Redis.from_url(stack.url)
    run = scripts.Scripts(client)
    settings = Settings(redis_url=stack.url)
    firer = Firer(create_celery_app(settings), client, settings, ["taskgate.add"])
    checks = 200 if args.quick else 2000
    sizes = (100, 1000) if args.quick else (100, 10_000, 100_000)
    rows: list[list[str]] = []
    made = 0
    now = time.time()
    for size in sizes:
        while made < size:  # every one due within the next hour, none now
            pipe_calls = [scripts.schedule_put(
                f"bench-{i}", "bench", mode="create", limit=0, now=now, next_due=ms(now + 60 + i % 3600),
                enabled=True, fields={"task": "add", "celery_name": "taskgate.add", "every": "3600.0",
                                      "anchor": ms(now), "arguments": '{"x": 1, "y": 2}'})
                for i in range(made, min(size, made + 1000))]
            for call in pipe_calls:
                run(call)
            made += len(pipe_calls)
        calls0, usec0 = _command_usec(client, "zrangebyscore")
        began = time.perf_counter()
        for _ in range(checks):
            assert firer.due(time.time()) == []
        wall = (time.perf_counter() - began) / checks
        calls1, usec1 = _command_usec(client, "zrangebyscore")
        rows.append([f"{size:,}", f"**{(usec1 - usec0) / checks:.1f} µs**", f"{(calls1 - calls0) / checks:g}",
                     f"{wall * 1e6:.0f} µs"])
    due_now = time.time()
    for i in range(100):
        client.zadd(keys.SCHEDULES_DUE, {f"bench-{i}": ms(due_now - 0.5)})
    calls0, usec0 = _command_usec(client, "evalsha")
    began = time.perf_counter()
    fired = firer.fire_due(due_now)
    wall = time.perf_counter() - began
    calls1, usec1 = _command_usec(client, "evalsha")
    client.delete(keys.SCHEDULES_DUE)
    report.add(f"### 8a. A keeper's check, by number of schedules ({checks:,} checks each)")
    report.add()
    report.add("Every worker's keeper checks for due schedules at least every 0.5 s, in one round trip "
               "of two indexed lookups of the due set (`ZRANGEBYSCORE`: the due ones, none here, and "
               "the next one, to wake at its tick). *Redis time* is what Redis spent per check (`INFO "
               "commandstats`); *wall* is one check's round trip from Python, on the same machine.")
    report.add()
    report.table(["schedules", "Redis time per check", "commands per check", "wall per check"], rows)
    report.add(f"A pass that fired **{fired}** due schedules (one `fire.lua` each, which claims the tick and "
               f"queues the run): **{(usec1 - usec0) / max(1, calls1 - calls0):.0f} µs** of Redis time per "
               f"fire, {wall * 1000:.0f} ms of wall time for the pass, with {sizes[-1]:,} schedules stored.")
    report.add()
    client.close()


def lateness(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    """How late runs are queued after their tick: 20 schedules every second on one worker."""
    client = redis.Redis.from_url(stack.url)
    stack.reset_data(client)
    worker = stack.worker("taskgate-worker-schedules", [sys.executable, "-m", "taskgate", "worker",
                                                        "--concurrency=2", "--log-level=warning"])
    schedules, seconds = (5, 4) if args.quick else (20, 16)
    late: list[float] = []
    with httpx.Client(base_url=stack.api, timeout=30) as http:
        ids = [http.post("/schedules", json={"task": "add", "arguments": {"x": i, "y": 1}, "every": 1}).json()
               ["schedule_id"] for i in range(schedules)]
        time.sleep(seconds)  # the measurement window: ticks fire while we wait
        for schedule_id in ids:
            http.post(f"/schedules/{schedule_id}/pause")
        for schedule_id in ids:
            page = http.get("/tasks", params={"schedule_id": schedule_id, "limit": 100}).json()
            for task in page["tasks"]:
                late.append(datetime.fromisoformat(task["created_at"]).timestamp()
                            - datetime.fromisoformat(task["tick"]).timestamp())
    stack.stop(worker)
    client.close()
    from bench.run import percentile

    late.sort()
    report.add(f"### 8b. How late runs are queued after their tick ({len(late)} ticks)")
    report.add()
    report.add(f"{schedules} schedules firing every second for {seconds} s, one worker (its keeper wakes at "
               "the next due tick): each run's record `created_at` minus the tick it stands for.")
    report.add()
    report.table(["ticks", "p50", "p90", "p99", "max"],
                 [[f"{len(late)}", *(f"{percentile(late, q) * 1000:.1f} ms" for q in (0.5, 0.9, 0.99)),
                   f"**{late[-1] * 1000:.1f} ms**"]])


def schedules_section(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    report.add("## 8. Schedules")
    report.add()
    keeper_costs(stack, args, report)
    lateness(stack, args, report)

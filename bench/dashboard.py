"""Section 9 of ``make bench``: the dashboard's task list with 100,000 tasks in the history, at
the HTTP level: the page's own files, and the API call that fills its first page (and the same
call with a filter no task matches, which reads the most history to answer)."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from bench.run import Report, Stack


def dashboard_section(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    from bench.run import median, percentile

    tasks = 5_000 if args.quick else 100_000
    samples = 10 if args.quick else 50
    with httpx.Client(base_url=stack.api, timeout=120) as http:
        for start in range(0, tasks, 1000):  # no worker runs: they stay queued, in the history
            answer = http.post("/tasks/add/batch", json={"items": [{"x": i, "y": 1}
                                                                   for i in range(start, start + 1000)]})
            answer.raise_for_status()

        def timed(*paths: str) -> list[float]:
            out = []
            for _ in range(samples):
                began = time.perf_counter()
                for path in paths:
                    http.get(path).raise_for_status()
                out.append((time.perf_counter() - began) * 1000)
            return out

        rows = {
            "the page's files (`/ui/`, `app.js`, `app.css`)": timed("/ui/", "/ui/static/app.js", "/ui/static/app.css"),
            "its first page of tasks (`GET /tasks?limit=50`)": timed("/tasks?limit=50"),
            "a filter no task matches (`GET /tasks?state=failed&limit=50`)": timed("/tasks?state=failed&limit=50"),
        }
    report.add(f"## 9. The dashboard's task list with {tasks:,} tasks in the history")
    report.add()
    report.add(f"What the task list loads, timed from a Python client on the same machine, {samples} times "
               "each, worker stopped (the tasks stay queued). The page then opens `GET /events`, which "
               "sends its first batch at once; the browser's own rendering is not timed here.")
    report.add()
    report.table(["request", "median", "p99"],
                 [[name, f"**{median(values):.1f} ms**", f"{percentile(values, 0.99):.1f} ms"]
                  for name, values in rows.items()])

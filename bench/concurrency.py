"""Section 11 of ``make bench``: thousands of requests at once on one API process, and
thousands of results gathered in one library process, on a healthy Redis.

One ``taskgate api`` with auth on and otherwise its defaults (TASKGATE_BACKEND_TIMEOUT 1 s,
TASKGATE_MAX_STREAMS 5,000 with a quarter per owner), a real worker, and the client in its own
process (bench/burst.py): each request on its own connection, all written before any answer is
read. Every figure is the median of the repetitions; errors are summed over them."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import redis

if TYPE_CHECKING:
    from bench.run import Report, Stack

#: API keys the bursts are spread over, round robin: at the default share of streams per owner
#: (a quarter of TASKGATE_MAX_STREAMS), 2,000 waits need more than one owner.
OWNERS = 4
TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Row:
    """One burst's figures, one entry per repetition."""

    name: str
    requests: int
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)  # the client's time from its first connection on
    api_cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


class Burst:
    """The API under test, its owners' keys, and the client process that bursts it."""

    def __init__(self, stack: Stack, pid: int, base: str, keys: list[str]) -> None:
        self.stack, self.pid, self.base, self.keys = stack, pid, base, keys
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)

    def request(self, index: int, method: str, path: str, body: bytes = b"") -> str:
        """Request ``index`` of a burst, as owner ``index % OWNERS``."""
        return (f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                f"Authorization: Bearer {self.keys[index % OWNERS]}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body.decode()}")

    def headers(self, owner: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[owner]}"}

    def run(self, row: Row, requests: list[str], until: str | None = None) -> list[list[Any]]:
        """Send one burst and add its figures to ``row``; the answers, in request order."""
        from bench.run import percentile

        before = process_cpu(self.pid)
        out = client({"kind": "http", "host": self.host, "port": self.port, "requests": requests, "until": until},
                     self.stack.env)
        row.api_cpu.append(process_cpu(self.pid) - before)
        answers: list[list[Any]] = out["answers"]
        latencies = [answer[2] for answer in answers]
        row.p50.append(percentile(latencies, 0.5))
        row.p99.append(percentile(latencies, 0.99))
        row.wall.append(out["wall"])
        row.busy.append(out["connect"] + out["wall"])
        row.client_cpu.append(out["cpu"])
        row.errors.update(f"{status} {kind}".strip() for status, kind, _, _ in answers if not 200 <= status < 300)
        return answers

    def finished_task(self, owner: int) -> str:
        with httpx.Client(base_url=self.base, headers=self.headers(owner), timeout=40) as http:
            task_id = str(http.post("/tasks/add", json={"x": 1, "y": 2}).json()["task_id"])
            record = http.get(f"/tasks/{task_id}", params={"wait": 30}).json()
        if record["state"] != "succeeded":
            raise RuntimeError(f"the probe task did not succeed: {record}")
        return task_id

    def parked_task(self, owner: int) -> str:
        """A task queued with a countdown of 600 s: a wait on it lasts its whole ``wait``."""
        answer = httpx.post(f"{self.base}/tasks/add", params={"countdown": 600}, json={"x": 1, "y": 2},
                            headers=self.headers(owner), timeout=10)
        return str(answer.json()["task_id"])

    def drain(self, answers: list[list[Any]]) -> None:
        """Wait until every task a submit burst queued has finished (so the worker is idle again)."""
        with httpx.Client(base_url=self.base, timeout=60) as http:
            for owner in range(OWNERS):
                ids = [answer[3] for index, answer in enumerate(answers) if answer[3] and index % OWNERS == owner]
                for start in range(0, len(ids), 1000):
                    deadline = time.monotonic() + 300
                    while time.monotonic() < deadline:
                        tasks = http.post("/tasks/results", json={"task_ids": ids[start:start + 1000], "wait": 30},
                                          headers=self.headers(owner)).json()["tasks"]
                        if all(task and task["state"] == "succeeded" for task in tasks):
                            break
                    else:
                        raise RuntimeError("the submitted tasks did not finish within 300 s")


def client(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """Run bench/burst.py with ``spec``; its answer."""
    run = subprocess.run([sys.executable, "-m", "bench.burst"], input=json.dumps(spec), env=env,
                         capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"bench.burst failed: {run.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(run.stdout)
    return answer


def errors_cell(errors: Counter[str]) -> str:
    if not errors:
        return "**0**"
    return "**" + ", ".join(f"{count} × {what}" for what, count in errors.most_common()) + "**"


def logged(path: Path) -> list[list[str]]:
    """What the API logged (it logs warnings and errors only), alike lines counted once: ids and
    numbers replaced by ``#``."""
    lines = Counter(re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+(\.\d+)?", "#", line.strip())[:300]
                    for line in path.read_text(errors="replace").splitlines() if line.strip())
    return [[f"{count:,}", f"`{line}`"] for line, count in lines.most_common(8)]


def concurrency_section(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    from bench.run import fmt, median
    from taskgate import auth

    burst_size, feeds, gathered, wait = (100, 50, 100, 1) if args.quick else (2000, 1000, 5000, 5)
    worker = stack.worker("taskgate-worker-burst", [sys.executable, "-m", "taskgate", "worker", "--concurrency=2",
                                                    "--log-level=warning"])
    api_proc, base = stack.http("taskgate-api-burst", [sys.executable, "-m", "taskgate", "api", "--log-level=warning",
                                                       "--no-access-log"], "/healthz", TASKGATE_AUTH="on")
    with redis.Redis.from_url(stack.url) as connection:
        keys = [auth.create(connection, f"burst-{owner}")[1] for owner in range(OWNERS)]
    api = Burst(stack, api_proc.pid, base, keys)
    rows = [Row("`GET /tasks/{id}` of a finished task", burst_size),
            Row(f"`GET /tasks/{{id}}?wait={wait}` of a task parked by a countdown (waits {wait} s)", burst_size),
            Row("`POST /tasks/add`", burst_size),
            Row("`GET /events` opened at once (to its first event)", feeds)]
    submit_s, results_s, library_cpu = [], [], []
    library_errors: Counter[str] = Counter()
    for _ in range(args.reps):
        finished = [api.finished_task(owner) for owner in range(OWNERS)]
        parked = [api.parked_task(owner) for owner in range(OWNERS)]
        api.run(rows[0], [api.request(i, "GET", f"/tasks/{finished[i % OWNERS]}") for i in range(burst_size)])
        api.run(rows[1], [api.request(i, "GET", f"/tasks/{parked[i % OWNERS]}?wait={wait}")
                          for i in range(burst_size)])
        submits = api.run(rows[2], [api.request(i, "POST", "/tasks/add", b'{"x": 1, "y": 2}')
                                    for i in range(burst_size)])
        api.drain(submits)
        api.run(rows[3], [api.request(i, "GET", "/events") for i in range(feeds)], until="event: tasks")
        out = client({"kind": "results", "count": gathered}, stack.env)
        submit_s.append(out["submit"])
        results_s.append(out["results"])
        library_cpu.append(out["cpu"])
        library_errors.update(out["errors"])
    stack.stop(worker)
    stack.stop(api_proc)
    client_share = max(cpu / busy for row in rows for cpu, busy in zip(row.client_cpu, row.busy, strict=True))
    api_share = max(cpu / busy for row in rows for cpu, busy in zip(row.api_cpu, row.busy, strict=True))
    report.add(f"## 11. Concurrency: {burst_size:,} requests at once on one API process, {gathered:,} results "
               f"gathered in one library process ({args.reps} repetitions)")
    report.add()
    report.add(f"One `taskgate api --no-access-log` with `TASKGATE_AUTH=on` and otherwise its defaults "
               f"(`TASKGATE_BACKEND_TIMEOUT` 1 s; `TASKGATE_MAX_STREAMS` 5,000, a quarter of it per owner, so "
               f"the requests are spread over {OWNERS} API keys, round robin), a real worker (concurrency 2). "
               "The client (bench/burst.py, uvloop) runs in its own process: it opens one connection per "
               "request, writes every request, then reads the answers. Latency: from a request's write to "
               "its complete answer (for `/events`, to the end of its first `tasks` event, which comes once the stream is live; a keep-alive comment does not count). Errors: every answer outside "
               "2xx in all repetitions, by status and error type, and as status 0 every connection that "
               "failed or closed before that end (the exception's name). "
               "After the submit burst the section waits until the worker has run those tasks. Each "
               "cell: **median** (every repetition).")
    report.add()
    report.add(f"The client is not the bottleneck: from its first connection to its last answer it used "
               f"at most {client_share:.0%} of one core in any burst (client CPU column, `getrusage`), "
               f"while the API process, one event loop on one core, used up to {api_share:.0%} (API CPU "
               "column, /proc/<pid>/stat read around the burst, connection setup included). Wall time "
               "runs from the first write to the last answer; the waits' is their `wait`, not work.")
    report.add()
    report.table(["burst", "requests", "errors", "p50 ms", "p99 ms", "wall s", "API CPU s", "client CPU s"],
                 [[row.name, f"{row.requests:,}", errors_cell(row.errors), fmt(row.p50), fmt(row.p99),
                   fmt(row.wall, 2), fmt(row.api_cpu, 2), fmt(row.client_cpu, 2)] for row in rows])
    report.add(f"{gathered:,} `add` tasks from one process: `async with Taskgate(builtins=[\"add\"]) as tg`, "
               f"`asyncio.gather` of {gathered:,} `tg.submit(add, n, 1)`, then of their `job.result()` "
               "(the same worker runs them; a wrong sum would count as an error).")
    report.add()
    report.table(["figure", "value"], [
        ["submits gathered, s", fmt(submit_s, 2)],
        ["results gathered (the worker running the tasks), s", fmt(results_s, 2)],
        ["errors (all repetitions)", errors_cell(library_errors)],
        [f"results per second ({gathered:,} / both gathers)",
         f"{median([gathered / (s + r) for s, r in zip(submit_s, results_s, strict=True)]):.0f}"],
        ["library process CPU over both gathers, s", fmt(library_cpu, 2)],
    ])
    log = logged(stack.tmp / "taskgate-api-burst.log")
    if log:
        report.add("What the API logged meanwhile (its warnings and errors; ids and numbers as `#`):")
        report.add()
        report.table(["lines", "line"], log)
    else:
        report.add("The API logged no warning or error meanwhile.")
        report.add()
    report.add("`python -m bench.run --only concurrency` runs this section alone.")
    report.add()

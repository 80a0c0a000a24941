"""Section 17 of ``make bench``: tracing (issue 28's "Measured").

* **The submit path**, three API processes on the run's private Valkey, worker stopped, the
  queue emptied before each run: wrk -t2 -c32 on ``GET /add`` and on ``POST /tasks/add`` (a JSON
  body) against (a) ``taskgate api`` without the ``otel`` extra (bench/otel_launch.py ``absent``:
  the modules the extra adds cannot be imported), (b) the same with the extra installed and
  ``TASKGATE_OTEL`` unset (tracing off), (c) tracing on to an in-memory exporter
  (bench/otel_launch.py ``memory``: an SDK provider with a ``BatchSpanProcessor`` over an
  ``InMemorySpanExporter``, set before the CLI starts). The order turns back each repetition.
* **A worker draining a queue**: ``taskgate worker --concurrency=2`` frozen (SIGSTOP, pool
  processes too) while N ``add`` tasks are queued (``POST /tasks/add/batch`` of 500), then let go:
  tasks/s from then to the last run's ``finished_at`` (as section 2b). Tracing off, and
  ``TASKGATE_OTEL=on`` with ``OTEL_TRACES_EXPORTER=none`` (spans made, not exported) and with
  ``otlp`` to a local OTLP/HTTP receiver in this process (each pool process encodes and posts its
  spans: what a deployment pays). The tasks of the traced runs are submitted through API (c), so
  their messages carry a ``traceparent`` the worker continues; the others' through API (b).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx
import redis

if TYPE_CHECKING:
    from bench.run import Report, Stack

#: The API variants, in the order of the even repetitions: (key, what the report calls it).
APIS = [("absent", "no `otel` extra (a)"), ("off", "extra installed, tracing off (b)"),
        ("memory", "tracing on, in-memory exporter (c)")]
#: The worker variants: (key, what the report calls it, the worker's added environment).
WORKERS = [("off", "tracing off", {}),
           ("none", "`TASKGATE_OTEL=on`, `OTEL_TRACES_EXPORTER=none`",
            {"TASKGATE_OTEL": "on", "OTEL_TRACES_EXPORTER": "none"}),
           ("otlp", "`TASKGATE_OTEL=on`, `OTEL_TRACES_EXPORTER=otlp` to a local receiver",
            {"TASKGATE_OTEL": "on", "OTEL_TRACES_EXPORTER": "otlp"})]
#: The issue's floor: the submit path with the extra installed and tracing off, against without it.
TARGET = 0.98


@dataclass
class Figures:
    """Each figure, one entry per repetition."""

    tasks: int
    submit: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (route, api) -> req/s
    p99: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (route, api) -> ms
    cpu: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (route, api) -> API µs/request
    worker: dict[str, list[float]] = field(default_factory=lambda: {key: [] for key, _, _ in WORKERS})
    carried: dict[str, list[bool]] = field(default_factory=lambda: {key: [] for key, _, _ in WORKERS})
    received: list[int] = field(default_factory=list)  # spans the receiver got per otlp run
    trace_ids: dict[str, bool] = field(default_factory=dict)  # api -> its records keep a trace id
    load: list[float] = field(default_factory=list)


class Receiver:
    """An OTLP/HTTP trace receiver on a free loopback port (``endpoint``) that counts the spans
    it is sent and answers each export with an empty success."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.spans = 0
        lock = threading.Lock()
        reply = ExportTraceServiceResponse().SerializeToString()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                count = sum(len(scope.spans) for spans in request.resource_spans for scope in spans.scope_spans)
                with lock:
                    receiver.spans += count
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="bench-otlp", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def keeps_trace(api: str) -> bool:
    """Whether a task submitted to ``api`` with a ``traceparent`` keeps that trace's id."""
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with httpx.Client(base_url=api, timeout=30) as http:
        answer = http.post("/tasks/add", json={"x": 1, "y": 2},
                           headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
        if answer.status_code != 202:
            raise RuntimeError(f"POST /tasks/add: {answer.status_code} {answer.text}")
        return bool(http.get(f"/tasks/{answer.json()['task_id']}").json().get("trace_id") == trace)


def submit_path(fig: Figures, args: argparse.Namespace, stack: Stack, apis: dict[str, str],
                client: redis.Redis, pids: dict[str, int]) -> None:
    """wrk on ``GET /add`` and ``POST /tasks/add`` of each API, the order turned back each
    repetition; with the API process's CPU per request (/proc), less swayed by the machine's load
    than req/s."""
    from bench.concurrency import process_cpu
    from bench.run import POST_LUA, wrk

    post = stack.tmp / "post.lua"
    post.write_text(POST_LUA)
    routes = [("GET /add", "/add?x=1&y=2", None), ("POST /tasks/add", "/tasks/add", post)]
    order = [key for key, _ in APIS]
    for rep in range(args.reps):
        for key in order if rep % 2 == 0 else order[::-1]:
            for route, path, lua in routes:
                stack.reset_data(client)  # our private server, no worker: an empty queue each run
                before = process_cpu(pids[key])
                result = wrk(apis[key] + path, args.duration, lua)
                used = process_cpu(pids[key]) - before
                fig.submit.setdefault((route, key), []).append(result["rps"])
                fig.cpu.setdefault((route, key), []).append(used / max(1.0, result["rps"] * args.duration) * 1e6)
                fig.p99.setdefault((route, key), []).append(result["p99"])
    stack.reset_data(client)


def drain(stack: Stack, client: redis.Redis, api: str, n: int, name: str, env: dict[str, str]) -> tuple[float, bool]:
    """One worker frozen while ``n`` tasks are queued through ``api``, then let go: (tasks/s from
    then to the last run's end, whether the first message queued carries a ``traceparent``)."""
    from bench.speed import _freeze
    from bench.webhooks import finished_ms, submit_adds

    stack.reset_data(client)
    worker = stack.worker(name, [sys.executable, "-m", "taskgate", "worker", "--concurrency=2",
                                 "--log-level=warning"], **env)
    try:
        with httpx.Client(base_url=api, timeout=60) as http:
            _freeze(worker, signal.SIGSTOP)
            try:
                ids = submit_adds(http, n)
                carried = b"traceparent" in (client.lindex("celery", -1) or b"")
            finally:
                let_go = time.time()
                _freeze(worker, signal.SIGCONT)
            for offset in range(0, n, 1000):
                chunk = ids[offset:offset + 1000]
                for _ in range(20):
                    tasks = http.post("/tasks/results", json={"task_ids": chunk, "wait": 30}, timeout=40).json()
                    if all(task and task["state"] == "succeeded" for task in tasks["tasks"]):
                        break
                else:
                    raise RuntimeError(f"{name}: the tasks did not end")
        ends = finished_ms(client, ids)
        return n / (max(ends.values()) / 1000 - let_go), carried
    finally:
        stack.stop(worker)


def worker_runs(fig: Figures, args: argparse.Namespace, stack: Stack, apis: dict[str, str],
                client: redis.Redis) -> None:
    """Each worker variant once a repetition, the order turned back each time."""
    receiver = Receiver()
    try:
        for rep in range(args.reps):
            for key, _, env in WORKERS if rep % 2 == 0 else WORKERS[::-1]:
                before = receiver.spans
                rate, carried = drain(stack, client, apis["off" if key == "off" else "memory"], fig.tasks,
                                      f"taskgate-worker-tracing-{key}",
                                      {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
                fig.worker[key].append(rate)
                fig.carried[key].append(carried)
                if key == "otlp":  # the worker flushed its spans as it stopped
                    fig.received.append(receiver.spans - before)
    finally:
        receiver.stop()
    stack.reset_data(client)


def tracing_section(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    fig = Figures(tasks=args.tasks, load=[os.getloadavg()[0]])
    client = redis.Redis.from_url(stack.url)
    quiet = ["--log-level=warning", "--no-access-log"]
    launch = [sys.executable, "-m", "bench.otel_launch"]
    argv = {"absent": [*launch, "absent", "api", *quiet], "off": [sys.executable, "-m", "taskgate", "api", *quiet],
            "memory": [*launch, "memory", "api", *quiet]}
    procs = []
    try:
        apis: dict[str, str] = {}
        pids: dict[str, int] = {}
        for key, _ in APIS:
            proc, apis[key] = stack.http(f"taskgate-api-tracing-{key}", argv[key], "/healthz")
            procs.append(proc)
            pids[key] = proc.pid
            fig.trace_ids[key] = keeps_trace(apis[key])
        submit_path(fig, args, stack, apis, client, pids)
        worker_runs(fig, args, stack, apis, client)
    finally:
        for proc in procs:
            stack.stop(proc)
    fig.load.append(os.getloadavg()[0])
    client.close()
    write_report(report, fig, args)


def write_report(report: Report, fig: Figures, args: argparse.Namespace) -> None:
    from bench.run import fmt, median

    def ratio(top: list[float], bottom: list[float], target: float | None = None) -> str:
        value = median(top) / median(bottom)
        verdict = "" if target is None else f" (target >= {target}x: {'met' if value >= target else 'missed'})"
        paired = ", ".join(f"{a / b:.2f}" for a, b in zip(top, bottom, strict=True))
        return f"**{value:.2f}x**{verdict}; by repetition {paired}"

    report.add(f"## 17. Tracing: the submit path without the extra, with tracing off and on; a worker with "
               f"tracing on against off ({args.reps} repetitions)")
    report.add()
    report.add(f"Three `taskgate api` processes (`--no-access-log`) on the run's private Valkey, worker stopped, "
               f"the queue emptied before each run; wrk -t2 -c32 -d{args.duration}s on `GET /add` and on `POST "
               "/tasks/add` (a JSON body), the order of the APIs turned back each repetition. (a) runs through "
               "bench/otel_launch.py `absent`: every module of the distributions `taskgate[otel]` adds (the SDK, "
               "the OTLP exporter, protobuf, requests, ...) fails to import, as without the extra; "
               "`opentelemetry-api` stays, as FastAPI 0.165 requires it. (b) is `taskgate api` with the extra "
               "installed and `TASKGATE_OTEL` unset. (c) runs through bench/otel_launch.py `memory`: an SDK "
               "`TracerProvider` with a `BatchSpanProcessor(InMemorySpanExporter(max_spans=10_000))` set before "
               "the CLI starts, so each submit is a SERVER and a PRODUCER span. "
               f"Machine load (1 min) {fig.load[0]:.1f} at the start, {fig.load[-1]:.1f} at the end. Each cell: "
               "**median** (every repetition).")
    report.add()
    kept = ", ".join(f"{key} {'yes' if fig.trace_ids[key] else 'no'}" for key, _ in APIS)
    routes = sorted({route for route, _ in fig.submit}, reverse=False)
    report.table(["route", *[f"{name} req/s" for _, name in APIS], "p99 ms (a / b / c)"],
                 [[f"`{route}`", *[fmt(fig.submit[route, key]) for key, _ in APIS],
                   " / ".join(f"{median(fig.p99[route, key]):.2f}" for key, _ in APIS)] for route in routes])
    report.table(["route", "tracing off vs no extra (b/a)", "tracing on vs off (c/b)"],
                 [[f"`{route}`", ratio(fig.submit[route, "off"], fig.submit[route, "absent"], TARGET),
                   ratio(fig.submit[route, "memory"], fig.submit[route, "off"])] for route in routes])
    report.add("The API process's CPU per request over each wrk run (/proc, user and system, over the "
               "requests wrk counted): less swayed by the shared machine's load than req/s, which a "
               "neighbour's burst moves by a fifth between repetitions. Lower is better; the ratio is "
               "no extra over tracing off (a/b), so >= 0.98x reads as the target does.")
    report.add()
    report.table(["route", *[f"{name} µs/req" for _, name in APIS], "no extra vs tracing off (a/b)"],
                 [[f"`{route}`", *[fmt(fig.cpu[route, key]) for key, _ in APIS],
                   ratio(fig.cpu[route, "absent"], fig.cpu[route, "off"], TARGET)] for route in routes])
    report.add(f"A task submitted with a `traceparent` keeps its trace id (`GET /tasks/{{id}}`'s `trace_id`): {kept}.")
    report.add()
    received = (f"; the receiver got {fmt([float(count) for count in fig.received])} spans a run "
                f"({fig.tasks:,} tasks and the worker's start probe)" if fig.received else "")
    report.add(f"A `taskgate worker --concurrency=2` (a fresh one each run) frozen (SIGSTOP, pool processes too) "
               f"while {fig.tasks:,} `add` tasks are queued (`POST /tasks/add/batch`, 500 a request), then let "
               "go: tasks/s from then to the last run's `finished_at`, as section 2b. Tracing off, and "
               "`TASKGATE_OTEL=on` with `OTEL_TRACES_EXPORTER=none` (each run a CONSUMER span continuing its "
               "message's trace, not exported: the cost of making spans) and with `otlp` to an OTLP/HTTP "
               "receiver in the bench process (each pool process's `BatchSpanProcessor` encodes its spans and "
               "POSTs them: what a deployment with a collector pays, less the collector)"
               f"{received}. The traced runs' tasks are submitted through API (c), their messages carrying a "
               "`traceparent`; the others' through API (b). The order turned back each repetition.")
    report.add()
    off = fig.worker["off"]
    report.table(["worker", "tasks/s", "vs tracing off", "messages with a traceparent"],
                 [[name, fmt(fig.worker[key]), "1.00x" if key == "off" else ratio(fig.worker[key], off),
                   f"{sum(fig.carried[key])} of {len(fig.carried[key])} runs"] for key, name, _ in WORKERS])

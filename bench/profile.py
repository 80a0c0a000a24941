"""Where the API's CPU goes per submit: `make profile` (or `python -m bench.profile --help`).

Runs the LPUSH ceiling app and taskgate's API, each alone under wrk (worker stopped, as in
bench.run section 1), samples each with py-spy, and writes bench/PROFILE.md: the API process's
CPU per request (from /proc, over the requests wrk counted) split by the component the samples
fall in. A sample is charged to the nearest frame, walking from the leaf, that belongs to a
named component (taskgate's modules, FastAPI, Starlette, uvicorn, redis-py, Pydantic, Celery);
standard-library frames (asyncio, uuid, logging...) are charged to their caller, and samples with
no such caller to the event loop.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.run import POST_LUA, ROOT, Report, Stack, machine, wrk

#: (component, how the paths of its frames start), most specific first.
COMPONENTS = [
    ("taskgate: submit script round trip (auto-pipeline)", ("taskgate/producer/autopipeline.py",)),
    ("taskgate: Celery message (template, kombu envelope)", ("taskgate/brokers/",)),
    ("taskgate: producer (ids, keys, arguments)", ("taskgate/producer/", "taskgate/records/")),
    ("taskgate: routes, parameters, auth", ("taskgate/",)),
    ("redis-py (connections, parser)", ("redis/",)),
    ("Pydantic", ("pydantic",)),
    ("Celery / kombu", ("celery/", "kombu/")),
    ("FastAPI (routing, request handling)", ("fastapi/",)),
    ("Starlette (middleware, requests, responses)", ("starlette/",)),
    ("uvicorn (HTTP parsing and writing)", ("uvicorn/",)),
]
#: Frames that start every stack (the process's main function): never a component.
BOOTSTRAP = ("taskgate/cli.py", "taskgate/__main__.py", "uvicorn/main.py", "uvicorn/server.py",
             "uvicorn/_compat.py", "typer/", "click/")
EVENT_LOOP = "event loop and the rest"
APP = "the app's endpoint"


def classify(stack: str, components: Sequence[tuple[str, tuple[str, ...]]] = COMPONENTS,
             rest: str = EVENT_LOOP) -> str:
    """The component one py-spy raw stack (root;...;leaf) is charged to (``rest`` when none)."""
    for frame in reversed(stack.split(";")):
        location = frame[frame.rfind("(") + 1:]
        if location.startswith(BOOTSTRAP):
            continue
        if location.startswith("bench/apps.py"):
            return APP
        for name, starts in components:
            if location.startswith(starts):
                return name
    return rest


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile(pid: int, url: str, duration: int, out: Path, script: Path | None) -> tuple[float, Counter[str]]:
    """CPU µs per request of ``pid`` under wrk, and its py-spy samples by component."""
    wrk(url, 2, script)  # warm up
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--rate", "250", "--duration", str(duration), "--format",
                            "raw", "--output", str(out), "--pid", str(pid), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    before = cpu_seconds(pid)
    result = wrk(url, duration - 1, script)
    used = cpu_seconds(pid) - before
    spy.wait(60)
    samples: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples[classify(stack)] += int(count)
    return used / (result["rps"] * (duration - 1)) * 1e6, samples


def profile_section(stack: Stack, report: Report, duration: int) -> None:
    """Profile the LPUSH ceiling and taskgate's submit routes on ``stack``; add the table."""
    post = stack.tmp / "profile-post.lua"
    post.write_text(POST_LUA)
    lpush, lpush_url = stack.http("profile-lpush", [sys.executable, "-m", "uvicorn", "bench.apps:lpush_app",
                                                    "--no-access-log", "--log-level=warning"], "/lpush")
    api, api_url = stack.http("profile-api", [sys.executable, "-m", "taskgate", "api", "--log-level=warning",
                                              "--no-access-log"], "/healthz")
    targets = [("LPUSH ceiling", lpush.pid, f"{lpush_url}/lpush", None),
               ("taskgate `GET /add`", api.pid, f"{api_url}/add?x=1&y=2", None),
               ("taskgate `POST /tasks/add`", api.pid, f"{api_url}/tasks/add", post)]
    columns = []
    for name, pid, url, script in targets:
        per_request, samples = profile(pid, url, duration, stack.tmp / "spy.txt", script)
        columns.append((name, per_request, samples))
    stack.stop(lpush)
    stack.stop(api)
    rows = []
    for component in [EVENT_LOOP, APP, *reversed([name for name, _ in COMPONENTS])]:
        cells = [f"{per_request * samples[component] / (sum(samples.values()) or 1):.0f}"
                 for _, per_request, samples in columns]
        if any(cell != "0" for cell in cells):
            rows.append([component, *cells])
    rows.append(["**total CPU per request**", *[f"**{per_request:.0f}**" for _, per_request, _ in columns]])
    report.add("py-spy samples of each API process under `wrk -t2 -c32`, worker stopped; µs are the "
               "process's CPU per request (from /proc, over the requests wrk counted), split by the "
               "share of samples in each component. A sample is charged to the nearest frame, from "
               "the leaf, in a named component; standard-library frames (asyncio, uuid, logging) "
               "count for their caller.")
    report.add()
    report.table(["component (µs of API CPU per request)", *[name for name, _, _ in columns]], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="Seconds of sampling per target.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "PROFILE.md")
    args = parser.parse_args(argv)
    report = Report()
    report.add("# Where the API's CPU goes per submit")
    report.add()
    report.add("Written by `make profile` (`python -m bench.profile`); `make bench` includes the same "
               "table. The machine is shared and noisy: compare the columns of one file.")
    report.add()
    for line in machine():
        report.add(line)
    report.add()
    with tempfile.TemporaryDirectory(prefix="taskgate-profile-") as tmp:
        stack = Stack(Path(tmp))
        try:
            profile_section(stack, report, args.duration)
        finally:
            stack.close()
    args.out.write_text("\n".join(report.lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

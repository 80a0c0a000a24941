"""Section 10 of ``make bench``: the test kit (``taskgate_worker``, README "Testing your app").

Runs pytest, as a user does, in a temporary directory holding README's app
(``examples/yourapp``) and a test that times from inside: the fixture's session setup (a
private Valkey and a worker ready), the first ``submit_sync`` of the session, then ``submit_sync``
and ``await submit`` round trips to the result, and the cleanup a test starts with. Each
repetition is a new pytest session; the whole run of README's three tests is timed too."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Report, Stack

ROOT = Path(__file__).resolve().parent.parent

TIMED = '''
import asyncio, json, os, time
from tasks import add

def test_timed(taskgate_worker):
    began = time.perf_counter()
    assert add.submit_sync(x=1, y=2).result(timeout=10) == 3
    first = time.perf_counter() - began
    sync, asynchronous, clears = [], [], []
    for _ in range(int(os.environ["KIT_ROUNDTRIPS"])):
        began = time.perf_counter()
        assert add.submit_sync(x=1, y=2).result(timeout=10) == 3
        sync.append(time.perf_counter() - began)

    async def awaited():
        for _ in range(int(os.environ["KIT_ROUNDTRIPS"])):
            began = time.perf_counter()
            assert await (await add.submit(x=1, y=2)).result(timeout=10) == 3
            asynchronous.append(time.perf_counter() - began)

    asyncio.run(awaited())
    for _ in range(20):
        began = time.perf_counter()
        taskgate_worker.clear()
        clears.append(time.perf_counter() - began)
    with open(os.environ["KIT_OUT"], "w") as out:
        json.dump({"setup": taskgate_worker.setup_seconds, "first": first, "sync": sync,
                   "async": asynchronous, "clear": clears}, out)
'''

README_TESTS = '''
import pytest
from fastapi.testclient import TestClient
from main import app
from tasks import add

def test_sum(taskgate_worker):
    with TestClient(app) as client:
        assert client.get("/sum", params={"x": 1, "y": 2}).json()["result"] == 3

def test_submit_sync(taskgate_worker):
    assert add.submit_sync(x=2, y=3).result(timeout=10) == 5

@pytest.mark.anyio
async def test_submit(taskgate_worker):
    assert await (await add.submit(x=4, y=5)).result(timeout=10) == 9
'''


def _project(directory: Path) -> None:
    for name in ("tasks.py", "main.py"):
        shutil.copy(ROOT / "examples" / "yourapp" / name, directory / name)
    (directory / "pytest.ini").write_text("[pytest]\ntaskgate_tasks = tasks\n")
    (directory / "test_timed.py").write_text(TIMED)
    (directory / "test_app.py").write_text(README_TESTS)


def _pytest(directory: Path, *args: str, **env: str) -> float:
    """Run pytest there (no TASKGATE_* setting inherited); its wall time in seconds."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    began = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=directory,
                         env={**clean, **env}, capture_output=True, text=True, timeout=300)
    if run.returncode != 0:
        raise RuntimeError(f"pytest failed in {directory}:\n{run.stdout[-3000:]}{run.stderr[-2000:]}")
    return time.perf_counter() - began


def testkit_section(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    from bench.run import fmt, median

    roundtrips = 5 if args.quick else 200
    setup, first, clear, whole = [], [], [], []
    sync_p50, async_p50 = [], []
    samples: dict[str, list[float]] = {"sync": [], "async": []}
    with tempfile.TemporaryDirectory(prefix="taskgate-bench-kit-") as tmp:
        directory = Path(tmp)
        _project(directory)
        for _ in range(args.reps):
            _pytest(directory, "test_timed.py", KIT_OUT=str(directory / "out.json"), KIT_ROUNDTRIPS=str(roundtrips))
            figures = json.loads((directory / "out.json").read_text())
            setup.append(figures["setup"])
            first.append(figures["first"] * 1000)
            clear.append(median(figures["clear"]) * 1000)
            sync_p50.append(median(figures["sync"]) * 1000)
            async_p50.append(median(figures["async"]) * 1000)
            for kind in samples:
                samples[kind] += [value * 1000 for value in figures[kind]]
            whole.append(_pytest(directory, "test_app.py"))
    report.add("## 10. The test kit (`taskgate_worker`)")
    report.add()
    report.add(f"pytest in a directory holding README's app, {args.reps} sessions, each timing from inside a "
               f"test: the fixture's setup, then {roundtrips} `submit_sync` and {roundtrips} `await submit` "
               "round trips to the result (worker concurrency 2), and the cleanup every test starts with. "
               "`python -m bench.run --only testkit` runs this section alone.")
    report.add()
    report.table(["figure", "value (median, every session)"], [
        ["session setup: private Valkey and a worker ready, s", fmt(setup, 2)],
        ["first `submit_sync` of a session (opens the process-wide Taskgate), ms", fmt(first, 0)],
        ["`submit_sync` + `result()` round trip, p50 per session, ms", fmt(sync_p50, 1)],
        ["  all sessions' samples, ms", fmt(samples["sync"], 1)],
        ["`await submit` + `await result()` round trip, p50 per session, ms", fmt(async_p50, 1)],
        ["  all sessions' samples, ms", fmt(samples["async"], 1)],
        ["cleanup before a test (empty history), ms", fmt(clear, 1)],
        ["README's three tests, the whole `pytest -q` run, s", fmt(whole, 1)],
    ])

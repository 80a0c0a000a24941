"""Functional smoke runs of the benchmark harness (`make bench` runs the real one): every section,
in three quick runs that `make test` spreads over its processes (one took over 7 minutes on a
loaded machine)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT

#: Each run's options, its report's name, and the sections its report must have.
RUNS = {
    "whole-but": (["--skip", "testkit,concurrency,admission,feeds,multiproc,workflows,webhooks,tracing"],
                  "taskgate-bench-quick.md",
                  ["## 1. Submit throughput", "## 2. End to end", "## 3. Single-task round trip", "## 4. Degraded",
                   "## 5. Cost", "## 8. Schedules", "## 9. The dashboard", "- Machine: ", "taskgate `GET /add`",
                   "raw Celery", "(Skipped: `testkit`, `concurrency`, `admission`, `feeds`, `multiproc`, "
                   "`workflows`, `webhooks`, `tracing`.)"]),
    "admission": (["--only", "testkit,concurrency,admission,workflows"],
                  "taskgate-bench-testkit-concurrency-admission-workflows.md",
                  ["## 10. The test kit", "## 11. Concurrency", "## 12. Admission", "## 15. Workflows",
                   "(Only sections 10, 11, 12, 15: `--only testkit,concurrency,admission,workflows`.)"]),
    "webhooks": (["--only", "feeds,multiproc,webhooks,tracing"], "taskgate-bench-feeds-multiproc-webhooks-tracing.md",
                 ["## 13. Live feeds", "## 14. Several API processes", "## 16. Webhooks", "## 17. Tracing",
                  "(Only sections 13, 14, 16, 17: `--only feeds,multiproc,webhooks,tracing`.)"]),
}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (.ci/run installs it)")
@pytest.mark.timeout(420)  # about 80 s each alone, more on a loaded machine
@pytest.mark.parametrize("run", list(RUNS))
def test_bench_quick_run_writes_its_sections(tmp_path: Path, run: str) -> None:
    options, name, sections = RUNS[run]
    committed = (ROOT / "bench" / "RESULTS.md").read_bytes()
    # As `make bench BENCH_ARGS="--quick ..."` runs it: no --out, so it writes to the temporary directory.
    # In a session of its own: past its time, the bench and every server it started are stopped
    # (a bench killed alone leaves its APIs, workers and Valkey running).
    proc = subprocess.Popen([sys.executable, "-m", "bench.run", "--quick", *options], cwd=tmp_path,
                            env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the quick bench took over 400 s:\n{stdout[-3000:]}{stderr[-3000:]}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    out = tmp_path / name
    assert f"wrote {out}" in stdout
    assert (ROOT / "bench" / "RESULTS.md").read_bytes() == committed, "a smoke run replaced the results"
    text = out.read_text()
    for section in sections:
        assert section in text


def test_every_section_is_in_one_of_the_runs() -> None:
    from bench.run import SECTIONS

    skipped = set(RUNS["whole-but"][0][1].split(","))
    only = [name for run, (options, _, _) in RUNS.items() if run != "whole-but" for name in options[1].split(",")]
    assert sorted(only) == sorted(skipped), "each section the whole run skips runs once on its own"
    assert skipped < set(SECTIONS)

"""One functional smoke run of the benchmark harness (`make bench` runs the real one)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (.ci/run installs it)")
@pytest.mark.timeout(420)  # every section, each starting its own servers: about 150 s, more on a loaded machine
def test_bench_quick_run_writes_every_section(tmp_path: Path) -> None:
    committed = (ROOT / "bench" / "RESULTS.md").read_bytes()
    # As `make bench BENCH_ARGS=--quick` runs it: no --out, so it writes to the temporary directory.
    result = subprocess.run([sys.executable, "-m", "bench.run", "--quick"], cwd=tmp_path,
                            env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = tmp_path / "taskgate-bench-quick.md"
    assert f"wrote {out}" in result.stdout
    assert (ROOT / "bench" / "RESULTS.md").read_bytes() == committed, "a smoke run replaced the results"
    text = out.read_text()
    for section in ("## 1. Submit throughput", "## 2. End to end", "## 3. Single-task round trip",
                    "## 4. Degraded", "## 5. Cost", "## 10. The test kit",
                    "## 11. Concurrency", "## 12. Admission", "## 14. Several API processes",
                    "## 15. Workflows", "## 16. Webhooks", "## 17. Tracing", "- Machine: "):
        assert section in text
    assert "taskgate `GET /add`" in text and "raw Celery" in text

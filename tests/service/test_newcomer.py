"""The README's first command, as a newcomer meets it: ``make run`` in a fresh copy of the
repository, with nothing run before, installs the runtime dependencies only (no dev extras, so a
missing runtime dependency fails here) and ends in a system that answers ``/add``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from ..helpers import ROOT, free_port, wait_for, wait_result


def fresh_copy(target: Path) -> Path:
    """The repository's files as a clone would have them (tracked and new, not ignored)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.timeout(600)
def test_make_run_on_a_fresh_copy_answers_add(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.fail("make is not installed: the README's commands need it")
    repo = fresh_copy(tmp_path / "taskgate")
    port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TASKGATE_", "VIRTUAL_ENV", "PYTHON", "MAKE"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    log = tmp_path / "make-run.log"
    began = time.monotonic()
    with log.open("wb") as out:
        # Its own session, like a terminal's job: Ctrl-C (SIGINT) goes to make and taskgate up.
        make = subprocess.Popen(["make", "run", f"RUN_ARGS=--port {port} --flower-port {flower_port}"],
                                cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        def running() -> bool:
            assert make.poll() is None, log.read_text()
            return b"taskgate: running" in log.read_bytes()

        wait_for(running, 480, "make run to bring the system up", interval=0.5)
        started = time.monotonic() - began
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            # As a newcomer does: curl as soon as it says "running" (the API must be listening).
            task_id = client.get("/add", params={"x": 1, "y": 2}).json()["task_id"]
            assert wait_result(client, task_id, timeout=60) == {"status": "completed", "result": 3}
        # Runtime dependencies only: the dev tools are not there.
        probe = subprocess.run([str(repo / ".venv/bin/python"), "-c", "import pytest"], capture_output=True)
        assert probe.returncode != 0, "make run installed the dev extras"
        output = log.read_text()
        assert "Installing taskgate and its runtime dependencies" in output
        assert "taskgate: cli     .venv/bin/taskgate" in output, output
        print(f"make run: system up {started:.0f} s after a fresh start (install included)")
    finally:
        print(log.read_text()[-4000:])  # shown by pytest when the test fails
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)
            try:
                make.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(make.pid, signal.SIGKILL)
                make.wait()
    assert "taskgate: stopped" in log.read_text(), log.read_text()

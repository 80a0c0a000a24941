"""``taskgate up``: the whole system as one foreground command, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .helpers import free_port, submit, wait, wait_for, wait_result


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
                if len(address) == 8:
                    found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add("ipv6:" + address)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def up(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """``taskgate up`` with the embedded Valkey, on free ports, as a subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    env["TASKGATE_DATA_DIR"] = str(tmp_path / "data")
    port, flower_port = free_port(), free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskgate", "up", f"--port={port}", f"--flower-port={flower_port}",
             "--concurrency=1"], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(base + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, 60, "taskgate up to serve /readyz")
    yield proc, base, log
    if proc.poll() is None:
        for pid in descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()


def test_up_runs_everything_and_stops_cleanly(up: tuple[subprocess.Popen[bytes], str, Path],
                                              tmp_path: Path) -> None:
    proc, base, log = up
    with httpx.Client(base_url=base, timeout=10) as client:
        task_id = client.get("/add", params={"x": 1, "y": 2}).json()["task_id"]
        assert wait_result(client, task_id, timeout=30) == {"status": "completed", "result": 3}
        mail = wait(client, submit(client, "send_email", {"to": ["ann@example.com"], "subject": "Local",
                                                          "body": "Through the sink."}), 30)
        assert mail["state"] == "succeeded", mail
    eml = list((tmp_path / "data" / "mail").glob("*.eml"))
    assert len(eml) == 1 and b"Subject: Local" in eml[0].read_bytes()
    output = log.read_text()
    for line in ("taskgate: valkey  redis://127.0.0.1:", "taskgate: smtp    smtp://127.0.0.1:",
                 "taskgate: worker", f"taskgate: api     {base}", "taskgate: flower  http://127.0.0.1:"):
        assert line in output, output
    flower_url = output.split("taskgate: flower  ")[1].split()[0]
    assert httpx.get(flower_url, timeout=5).status_code == 200
    # Workers start without task events; Flower switches them on (every 5 s) and then lists tasks.
    with httpx.Client(base_url=base, timeout=10) as client:
        def flower_lists_tasks() -> bool:
            client.get("/add", params={"x": 1, "y": 1})
            listed = httpx.get(f"{flower_url}/tasks/datatable", timeout=5, params={
                "draw": 1, "start": 0, "length": 10, "search[value]": "", "order[0][column]": 0,
                "order[0][dir]": "asc", "columns[0][data]": "name"}).json()["data"]
            return any(task["name"] == "taskgate.add" for task in listed)

        wait_for(flower_lists_tasks, 30, "Flower to list a task", interval=1)
    flower_port = int(flower_url.rsplit(":", 1)[1])
    assert listening_addresses(flower_port) == {"127.0.0.1"}, "Flower must bind to loopback only"
    assert (tmp_path / "data" / "valkey" / "appendonlydir").is_dir(), "embedded Valkey keeps an AOF"

    children = descendants(proc.pid)
    assert len(children) >= 6, [cmdline(pid) for pid in children]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, log.read_text()
    left = [cmdline(pid) for pid in children if alive(pid)]
    assert left == [], f"processes left behind: {left}"
    assert "taskgate: stopped" in log.read_text()


def test_up_exits_non_zero_when_a_component_dies(up: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    proc, _, log = up
    workers = [pid for pid in descendants(proc.pid)
               if "taskgate worker" in cmdline(pid) and "taskgate up" not in cmdline(pid)]
    leader = min(workers)  # the worker's main process; its pool children have higher pids
    children = descendants(proc.pid)
    os.kill(leader, signal.SIGKILL)
    assert proc.wait(60) == 1
    output = log.read_text()
    assert "taskgate: worker exited with code -9; stopping the others" in output
    left = [cmdline(pid) for pid in children if alive(pid)]
    assert left == [], f"processes left behind: {left}"

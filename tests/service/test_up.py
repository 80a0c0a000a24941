"""``taskgate up``: the whole system as one foreground command, stopped cleanly by Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..helpers import ROOT, free_port, submit, wait, wait_for, wait_result


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


Up = tuple[subprocess.Popen[bytes], str, Path]


def start_up(tmp_path: Path, *args: str, cwd: Path | None = None, data_dir: Path | None = None,
             log_name: str = "up.log", **extra: str) -> Up:
    """Start ``taskgate up`` (embedded Valkey, free ports) and return once /readyz answers.

    TASKGATE_REDIS_URL is set empty, as compose files leave it: empty means unset."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    env["TASKGATE_REDIS_URL"] = ""
    if data_dir is not None:
        env["TASKGATE_DATA_DIR"] = str(data_dir)
    env.update(extra)
    port, flower_port = free_port(), free_port()
    log = tmp_path / log_name
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskgate", "up", f"--port={port}", f"--flower-port={flower_port}",
             "--concurrency=1", *args], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd or tmp_path)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return httpx.get(base + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, 60, "taskgate up to serve /readyz")
    return proc, base, log


def kill_all(proc: subprocess.Popen[bytes]) -> None:
    """Kill an ``up`` we started and everything below it."""
    if proc.poll() is None:
        for pid in descendants(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
    proc.wait()


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """``taskgate up`` with the embedded Valkey, on free ports, as a subprocess."""
    proc, base, log = start_up(tmp_path, data_dir=tmp_path / "data")
    yield proc, base, log
    kill_all(proc)


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


def test_up_runs_the_api_in_several_processes_and_replaces_a_dead_one(tmp_path: Path) -> None:
    proc, base, log = start_up(tmp_path, "--api-workers=2", "--no-flower", data_dir=tmp_path / "data")
    try:
        api = next(pid for pid in descendants(proc.pid) if "taskgate api" in cmdline(pid))

        def servers() -> set[int]:  # uvicorn's spawned children (multiprocessing's tracker aside)
            return {pid for pid in descendants(api) if "spawn_main" in cmdline(pid)}

        first = servers()
        assert len(first) == 2, [cmdline(pid) for pid in descendants(api)]
        assert "; 2 processes)" in log.read_text()
        os.kill(min(first), signal.SIGKILL)
        wait_for(lambda: len(servers()) == 2 and len(servers() - first) == 1, 30, "a new API process")
        assert proc.poll() is None, log.read_text()
        with httpx.Client(base_url=base, timeout=10) as client:
            task_id = client.get("/add", params={"x": 1, "y": 2}).json()["task_id"]
            assert wait_result(client, task_id, timeout=30) == {"status": "completed", "result": 3}
        children = descendants(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
        left = [cmdline(pid) for pid in children if alive(pid)]
        assert left == [], f"processes left behind: {left}"
    finally:
        kill_all(proc)


SAMPLE_TASKS = {"TASKGATE_TASK_MODULES": "tests.sample_tasks", "PYTHONPATH": str(ROOT)}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    env.update(extra)
    return env


def test_second_up_on_one_data_dir_refuses_before_starting_anything(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, base, banner = start_up(tmp_path, data_dir=data, **SAMPLE_TASKS)
    try:
        runs = tmp_path / "runs.log"
        with httpx.Client(base_url=base, timeout=10) as client:
            ids = [submit(client, "logged_sleep", {"log": str(runs), "token": f"t{i}", "seconds": 0.2})
                   for i in range(3)]
            second = subprocess.run(
                [sys.executable, "-m", "taskgate", "up", f"--port={free_port()}",
                 f"--flower-port={free_port()}"], env=clean_env(TASKGATE_DATA_DIR=str(data), **SAMPLE_TASKS),
                cwd=tmp_path, capture_output=True, text=True, timeout=30)
            assert second.returncode == 2, second
            assert f"pid {proc.pid}, API {base}" in second.stderr
            assert "TASKGATE_DATA_DIR=" in second.stderr and "--port" in second.stderr
            assert "taskgate: valkey" not in second.stdout, "the second up started something"
            # Started with TASKGATE_DATA_DIR, the first one's banner names only that way to it.
            assert f"from another terminal with TASKGATE_DATA_DIR={data.resolve()}," in banner.read_text()
            # The embedded Valkey refuses a data dir another live one holds, on its own too.
            valkey = subprocess.run([sys.executable, "-m", "taskgate.service.embedded", "--data-dir", str(data)],
                                    env=clean_env(), capture_output=True, text=True, timeout=30)
            assert valkey.returncode != 0 and "another embedded Valkey already uses" in valkey.stderr
            assert valkey.stdout == ""
            for task_id in ids:
                assert wait(client, task_id, 30)["state"] == "succeeded"
        tokens = [line.split()[0] for line in runs.read_text().splitlines()]
        assert sorted(tokens) == ["t0", "t1", "t2"], "each task ran exactly once"
    finally:
        kill_all(proc)


def test_a_busy_port_is_refused_before_starting_anything(tmp_path: Path) -> None:
    proc, base, _ = start_up(tmp_path, data_dir=tmp_path / "one")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "taskgate", "up", f"--port={base.rsplit(':', 1)[1]}",
             f"--flower-port={free_port()}"], env=clean_env(TASKGATE_DATA_DIR=str(tmp_path / "two")),
            cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert second.returncode == 2, second
        assert "already in use" in second.stderr and "--port" in second.stderr
        assert "taskgate: valkey" not in second.stdout
    finally:
        kill_all(proc)


def test_killed_up_leaves_nothing_running_and_the_next_starts_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, base, _ = start_up(tmp_path, data_dir=data, **SAMPLE_TASKS)
    started = tmp_path / "started"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            done = client.get("/add", params={"x": 2, "y": 3}).json()["task_id"]
            assert wait_result(client, done, timeout=30)["result"] == 5
            submit(client, "sleepy", {"seconds": 60, "started_file": str(started)})
            wait_for(started.exists, 30, "the long task to start")
        children = descendants(proc.pid)
        assert len(children) >= 6, [cmdline(pid) for pid in children]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        kill_all(proc)
    # At once, as a user would: the new embedded Valkey waits for the old one to finish stopping.
    again, base, log = start_up(tmp_path, data_dir=data, log_name="again.log", **SAMPLE_TASKS)
    try:
        wait_for(lambda: not any(alive(pid) for pid in children), 30, "every old component to stop")
        with httpx.Client(base_url=base, timeout=10) as client:
            # The first instance's work is still there (Valkey wrote its AOF out on SIGTERM).
            assert client.get(f"/result/{done}").json() == {"status": "completed", "result": 5}
            task_id = client.get("/add", params={"x": 1, "y": 1}).json()["task_id"]
            assert wait_result(client, task_id, timeout=30)["result"] == 2
    finally:
        kill_all(again)


def test_cli_in_another_terminal_finds_the_running_up(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    proc, _, log = start_up(tmp_path, cwd=project)  # default data dir: project/.taskgate
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "taskgate", *args], env=clean_env(**env), cwd=cwd,
                              capture_output=True, text=True, timeout=60)

    try:
        assert "from another terminal in this directory (or with TASKGATE_DATA_DIR=" in log.read_text()
        listed = cli("dead-letters", "list", cwd=project)
        assert listed.returncode == 0 and "no dead letters" in listed.stdout, listed
        assert f"taskgate up` (pid {proc.pid})" in listed.stderr
        doctor = cli("doctor", cwd=elsewhere, TASKGATE_DATA_DIR=str(project / ".taskgate"))
        assert doctor.returncode == 0 and "0 problem(s)" in doctor.stdout, doctor
        created = cli("keys", "create", "--owner", "ann", cwd=project, TASKGATE_REDIS_URL="")
        assert created.returncode == 0, created
        lost = cli("keys", "list", cwd=elsewhere)
        assert lost.returncode == 2 and "no Redis configured" in lost.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    stale = cli("keys", "list", cwd=project)  # the record of a stopped instance means nothing
    assert stale.returncode == 2 and "no Redis configured" in stale.stderr, stale


def _copy_example(name: str, into: Path) -> Path:
    """A copy of ``examples/<name>`` (a user's directory: __pycache__ lands there, not in the repo)."""
    import shutil

    target = into / name
    shutil.copytree(ROOT / "examples" / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


#: Flower's password in the tests that run it (its API needs one).
FLOWER_AUTH = ("flower", "test-only-password")


def _start_app(tmp_path: Path, example: str, *args: str,
               flower_port: int | None = None) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``taskgate up --app main:app`` in a copy of an example, ready once the app answers; with
    Flower (its password :data:`FLOWER_AUTH`) on ``flower_port`` if given."""
    where = _copy_example(example, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
    env["TASKGATE_DATA_DIR"] = str(tmp_path / "data")
    env["TASKGATE_FLOWER_BASIC_AUTH"] = ":".join(FLOWER_AUTH)
    port = free_port()
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskgate", "up", "--app", "main:app", f"--port={port}",
             f"--flower-port={flower_port or free_port()}", "--flower" if flower_port else "--no-flower",
             "--concurrency=1", *args],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=where)
    wait_for(lambda: proc.poll() is not None or "taskgate: running" in log.read_text(), 60, "up --app running")
    assert proc.poll() is None, log.read_text()
    return proc, f"http://127.0.0.1:{port}", log


def _stops_cleanly(proc: subprocess.Popen[bytes], log: Path) -> None:
    below = descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, log.read_text()
    assert "taskgate: stopped" in log.read_text()
    wait_for(lambda: not any(alive(pid) for pid in below), 30, "every component gone")


def test_up_serves_your_app_end_to_end(tmp_path: Path) -> None:
    """The README's "Use it in your own FastAPI app": your endpoint submits and returns the typed
    result, taskgate's router answers under /jobs, an async def task reports progress."""
    proc, base, log = _start_app(tmp_path, "yourapp")
    try:
        with httpx.Client(base_url=base, timeout=20) as client:
            answer = client.get("/sum", params={"x": 1, "y": 2})
            assert answer.status_code == 200, (answer.text, log.read_text())
            assert answer.json()["result"] == 3
            launched = client.post("/launch", params={"seconds": 2}).json()["job_id"]
            with client.stream("GET", f"/jobs/tasks/{launched}/events") as events:
                body = "".join(events.iter_text())
            assert "event: progress" in body and '"state": "succeeded"' in body, body
            assert client.get(f"/jobs/tasks/{launched}").json()["result"] == "liftoff"
            assert "/jobs/tasks/countdown" in client.get("/openapi.json").json()["paths"]
        # A blocking script beside it, given no Redis URL, finds the running up's Valkey.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
        env["TASKGATE_DATA_DIR"] = str(tmp_path / "data")
        script = "from tasks import add\nprint(add.submit_sync(x=2, y=2).result(timeout=20))\n"
        out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path / "yourapp", env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == "4", out.stderr
        assert "taskgate: app     " + base in log.read_text()
        _stops_cleanly(proc, log)
    finally:
        kill_all(proc)


def test_up_app_flower_knows_the_apps_own_tasks(tmp_path: Path) -> None:
    """Under `up --app`, Flower loads the app's module as the worker does: the app's own task
    (yourapp's `countdown`) is among the worker's registered tasks Flower lists, and Flower's own
    controls know it (they answer 404 "Unknown task" for a task Flower has not loaded)."""
    flower_port = free_port()
    proc, _, log = _start_app(tmp_path, "yourapp", flower_port=flower_port)
    flower = f"http://127.0.0.1:{flower_port}"
    try:
        workers: dict[str, Any] = {}

        def listed() -> bool:
            nonlocal workers
            try:
                answer = httpx.get(f"{flower}/api/workers", params={"refresh": 1}, auth=FLOWER_AUTH, timeout=10)
            except httpx.TransportError:
                return False
            workers = answer.json() if answer.status_code == 200 else {}
            return any("taskgate.countdown" in (info.get("registered") or ()) for info in workers.values())

        wait_for(listed, 60, "Flower to list the worker's tasks")
        (worker, info), = workers.items()
        assert {"taskgate.add", "taskgate.countdown", "taskgate.send_email"} <= set(info["registered"]), info
        limits = httpx.post(f"{flower}/api/task/timeout/taskgate.countdown", auth=FLOWER_AUTH, timeout=10,
                            data={"workername": worker, "soft": "60", "hard": "120"})
        assert limits.status_code == 200 and "time limits set" in limits.json()["message"], limits.text
        _stops_cleanly(proc, log)
    finally:
        kill_all(proc)


def test_the_tutorial_migrated_to_taskgate_keeps_its_endpoints(tmp_path: Path) -> None:
    """examples/tutorial: the seed's celery_app.py and main.py moved to taskgate, run with
    `taskgate up --app main:app` (its hard-coded Redis URL gives way to the embedded Valkey)."""
    proc, base, log = _start_app(tmp_path, "tutorial")
    try:
        with httpx.Client(base_url=base, timeout=20) as client:
            task_id = client.get("/add", params={"x": 1, "y": 2}).json()["task_id"]

            def completed() -> bool:
                return client.get(f"/result/{task_id}").json() == {"status": "completed", "result": 3}

            wait_for(completed, 30, "the tutorial's add to complete")
            assert client.get("/result/nope").status_code == 404
        _stops_cleanly(proc, log)
    finally:
        kill_all(proc)


def test_up_app_reload_restarts_the_worker_when_tasks_change(tmp_path: Path) -> None:
    proc, base, log = _start_app(tmp_path, "yourapp", "--reload")
    try:
        with httpx.Client(base_url=base, timeout=20) as client:
            assert client.get("/sum", params={"x": 1, "y": 2}).json()["result"] == 3
            tasks = tmp_path / "yourapp" / "tasks.py"
            tasks.write_text(tasks.read_text().replace("return x + y", "return x + y + 100"))

            def reloaded() -> bool:
                try:
                    return client.get("/sum", params={"x": 1, "y": 2}).json().get("result") == 103
                except (httpx.TransportError, ValueError):
                    return False

            wait_for(reloaded, 60, "the app and the worker to run the changed task")
        _stops_cleanly(proc, log)
    finally:
        kill_all(proc)


def test_a_killed_up_with_reload_leaves_nothing_running(tmp_path: Path) -> None:
    """`up --app --reload` killed unannounced: watchfiles, the worker it runs (and its pool), the
    app's reloader and server all stop; no worker is left on against a stopped Valkey."""
    proc, base, log = _start_app(tmp_path, "yourapp", "--reload")
    try:
        with httpx.Client(base_url=base, timeout=20) as client:
            assert client.get("/sum", params={"x": 1, "y": 2}).json()["result"] == 3
        children = descendants(proc.pid)
        assert any("taskgate worker" in cmdline(pid) or "-m taskgate worker" in cmdline(pid)
                   for pid in children), [cmdline(pid) for pid in children]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        wait_for(lambda: not any(alive(pid) for pid in children), 30, "every component to stop")
    finally:
        kill_all(proc)

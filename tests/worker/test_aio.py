"""``async def`` tasks on a real worker: one event loop per pool process, progress, cooperative
cancel, terminate, retries, time limits and late acks, each counted in the task's own log."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

import taskgate
from taskgate.states import TaskState

from .. import sample_tasks
from ..helpers import wait_for
from ..helpers import with_gate as run


def lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_each_pool_process_runs_async_tasks_on_one_loop(redis_url: str, worker: object) -> None:
    async def body(tg: taskgate.Taskgate) -> list[str]:
        jobs = [await sample_tasks.async_where.submit() for _ in range(20)]
        return [await job.result(timeout=20) for job in jobs]

    runs: dict[str, list[int]] = {}
    for where in run(redis_url, body):
        pid, count = where.split(":")
        runs.setdefault(pid, []).append(int(count))
    assert 1 <= len(runs) <= 2  # the worker's concurrency
    # Each process's loop counted every task that process ran: one loop, kept between tasks
    # (a loop per task would count 1 each time).
    for counts in runs.values():
        assert sorted(counts) == list(range(min(counts), min(counts) + len(counts))), runs
    assert any(len(counts) > 1 for counts in runs.values())


def test_progress_and_result(redis_url: str, worker: object, tmp_path: Path) -> None:
    log = tmp_path / "log"

    async def body(tg: taskgate.Taskgate) -> list[taskgate.JobEvent]:
        job = await sample_tasks.async_steps.submit(log=str(log), token="t", seconds=0.8)
        return [event async for event in job.events()]

    events = run(redis_url, body)
    assert "progress" in [event.kind for event in events]
    assert events[-1].record.state is TaskState.SUCCEEDED and events[-1].record.result == "t"
    assert [line.split()[0] for line in lines(log)] == ["start", "end"]


def test_cancel_cancels_the_coroutine(redis_url: str, worker: object, tmp_path: Path) -> None:
    log, started = tmp_path / "log", tmp_path / "started"

    async def body(tg: taskgate.Taskgate) -> taskgate.TaskRecord:
        job = await sample_tasks.async_steps.submit(log=str(log), token="c", seconds=30,
                                                   started_file=str(started))
        await _started(started)
        await job.cancel()
        with pytest.raises(taskgate.TaskCancelled):
            await job.result(timeout=10)
        return await job.status()

    record = run(redis_url, body)
    assert record.state is TaskState.CANCELLED
    assert [line.split()[0] for line in lines(log)] == ["start", "cancelled"]


async def _started(marker: Path) -> None:
    import asyncio

    await asyncio.to_thread(wait_for, marker.exists, 20, "the task started")


def test_terminate_kills_a_coroutine_that_never_yields(redis_url: str, worker: object,
                                                      tmp_path: Path) -> None:
    log = tmp_path / "log"

    async def body(tg: taskgate.Taskgate) -> taskgate.TaskRecord:
        job = await sample_tasks.async_stubborn.submit(log=str(log), token="k", seconds=30)
        await _started_in(log)
        await job.cancel(terminate=True)
        with pytest.raises(taskgate.TaskCancelled):
            await job.result(timeout=20)
        return await job.status()

    assert run(redis_url, body).state is TaskState.CANCELLED
    assert [line.split()[0] for line in lines(log)] == ["start"]


async def _started_in(log: Path) -> None:
    import asyncio

    await asyncio.to_thread(wait_for, lambda: bool(lines(log)), 20, "the task started")


def test_transient_failures_are_retried(redis_url: str, worker: object, tmp_path: Path) -> None:
    counter = tmp_path / "count"

    async def body(tg: taskgate.Taskgate) -> tuple[int, taskgate.TaskRecord]:
        job = await sample_tasks.async_flaky.submit(counter=str(counter), failures=2)
        return await job.result(timeout=30), await job.status()

    result, record = run(redis_url, body)
    assert result == 3 and record.attempts == 3 and counter.read_text() == "3"


def test_soft_time_limit_fails_the_task(redis_url: str, worker: object, tmp_path: Path) -> None:
    log = tmp_path / "log"

    async def body(tg: taskgate.Taskgate) -> taskgate.TaskFailed:
        job = await sample_tasks.async_soft_limited.submit(log=str(log), token="s", seconds=10)
        with pytest.raises(taskgate.TaskFailed) as raised:
            await job.result(timeout=20)
        return raised.value

    failed = run(redis_url, body)
    assert failed.error["type"] == "SoftTimeLimitExceeded"
    assert [line.split()[0] for line in lines(log)] == ["start"]


def test_hard_time_limit_fails_the_task(redis_url: str, worker: object, tmp_path: Path) -> None:
    log = tmp_path / "log"

    async def body(tg: taskgate.Taskgate) -> taskgate.TaskFailed:
        job = await sample_tasks.async_time_boxed.submit(log=str(log), token="h", seconds=10)
        with pytest.raises(taskgate.TaskFailed) as raised:
            await job.result(timeout=30)
        return raised.value

    assert run(redis_url, body).error["type"] == "TimeLimitExceeded"
    assert [line.split()[0] for line in lines(log)] == ["start"]


def test_a_killed_pool_process_runs_the_task_again(redis_url: str, worker: object, tmp_path: Path) -> None:
    """Late ack: the message of an async task whose process was SIGKILLed is requeued, and the
    task runs to its end once more (two starts, one end, counted by the task)."""
    log, started = tmp_path / "log", tmp_path / "started"

    async def body(tg: taskgate.Taskgate) -> tuple[str, taskgate.TaskRecord]:
        job = await sample_tasks.async_steps.submit(log=str(log), token="l", seconds=1.5,
                                                   started_file=str(started))
        await _started(started)
        os.kill(int(started.read_text()), signal.SIGKILL)  # a pool process of our worker
        return await job.result(timeout=60), await job.status()

    result, record = run(redis_url, body)
    assert result == "l" and record.deliveries >= 0
    kinds = [line.split()[0] for line in lines(log)]
    assert kinds == ["start", "start", "end"], kinds


def test_a_stray_cancellation_fails_the_task_and_spares_the_process(redis_url: str, worker: object) -> None:
    """A ``CancelledError`` no cancel request caused is a failure like any other: recorded once,
    not a dead pool process whose task is delivered again and again."""
    async def body(tg: taskgate.Taskgate) -> tuple[taskgate.TaskFailed, taskgate.TaskRecord, str]:
        job = await sample_tasks.async_stray_cancel.submit()
        with pytest.raises(taskgate.TaskFailed) as raised:
            await job.result(timeout=20)
        after = await (await sample_tasks.async_where.submit()).result(timeout=20)
        return raised.value, await job.status(), after

    failed, record, after = run(redis_url, body)
    assert failed.error["type"] == "RuntimeError" and "not on request" in str(failed.error["message"])
    assert record.attempts == 1 and record.deliveries <= 1 and after


def test_the_soft_time_limit_reaches_a_loop_busy_in_callbacks(redis_url: str, worker: object,
                                                             tmp_path: Path) -> None:
    """Celery's soft-limit signal most likely lands in one of the loop's plain callbacks here; it
    still cancels the coroutine and fails the task, long before the task's own end."""
    log = tmp_path / "log"

    async def body(tg: taskgate.Taskgate) -> taskgate.TaskFailed:
        job = await sample_tasks.async_busy_callbacks.submit(log=str(log), token="b", seconds=8)
        with pytest.raises(taskgate.TaskFailed) as raised:
            await job.result(timeout=6)
        return raised.value

    assert run(redis_url, body).error["type"] == "SoftTimeLimitExceeded"
    assert [line.split()[0] for line in lines(log)] == ["start"]

"""Tasks the test suite declares the way a user would (loaded via TASKGATE_TASK_MODULES)."""

# The async tasks log to files with blocking calls on purpose: each line must be written
# before the task goes on (the tests count executions by them), and one blocks its loop.
# ruff: noqa: ASYNC230, ASYNC240, ASYNC251

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import taskgate


class Flaky(ConnectionError):
    """A transient failure."""


@taskgate.task(retry=taskgate.RetryPolicy(transient=(Flaky,), max_retries=3, backoff=0.2, max_delay=0.5))
def flaky(counter: str, failures: int) -> int:
    """Fail transiently `failures` times (counted in the file `counter`), then succeed."""
    path = Path(counter)
    seen = int(path.read_text()) if path.exists() else 0
    path.write_text(str(seen + 1))
    if seen < failures:
        raise Flaky(f"transient failure {seen + 1} of {failures}")
    return seen + 1


@taskgate.task
def boom(message: str) -> None:
    """Always fail, permanently."""
    raise ValueError(message)


@taskgate.task
def sleepy(seconds: float, started_file: str = "") -> float:
    """Sleep in small steps, reporting progress and honouring cancellation."""
    if started_file:
        Path(started_file).write_text(str(os.getpid()))
    began = time.monotonic()
    while (elapsed := time.monotonic() - began) < seconds:
        taskgate.raise_if_cancelled()
        taskgate.report_progress(elapsed, seconds)
        time.sleep(0.02)
    return seconds


@taskgate.task
def stubborn(seconds: float, started_file: str = "") -> float:
    """Sleep without ever checking for cancellation (only ?terminate=true stops it)."""
    if started_file:
        Path(started_file).write_text("started")
    time.sleep(seconds)
    return seconds


@taskgate.task
def logged_sleep(log: str, token: str, seconds: float) -> str:
    """Append ``token`` and this process's pid to ``log`` at each start, sleep, return token."""
    with open(log, "a") as out:
        out.write(f"{token} {os.getpid()}\n")
    time.sleep(seconds)
    return token


@taskgate.task(expires=1)
def expiring(log: str, token: str) -> str:
    """Declared with a default expiry of 1 s: append ``token`` to ``log`` at each start."""
    with open(log, "a") as out:
        out.write(f"{token}\n")
    return token


@taskgate.task
def poison(log: str, kill_file: str) -> str:
    """Kill the process running it (SIGKILL) while ``kill_file`` exists; log every start."""
    with open(log, "a") as out:
        out.write(f"{os.getpid()}\n")
    if Path(kill_file).exists():
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


@taskgate.task(queue="slowlane")
def lane(x: int) -> int:
    """Runs only on workers that consume the `slowlane` queue."""
    return x * 2



def _counted_run(log: str, token: str, seconds: float) -> str:
    with open(log, "a") as out:
        out.write(f"start {token} {os.getpid()}\n")
    time.sleep(seconds)
    with open(log, "a") as out:
        out.write(f"end {token} {os.getpid()}\n")
    return token


@taskgate.task
def counted(log: str, token: str, seconds: float = 0) -> str:
    """Append ``start <token> <pid>`` to ``log``, sleep, then append ``end <token> <pid>``: each
    execution is counted by the task itself, start and end."""
    return _counted_run(log, token, seconds)


@taskgate.task(time_limit=2)
def time_boxed(log: str, token: str, seconds: float) -> str:
    """:func:`counted` under a hard time limit of 2 s: Celery kills the process past it."""
    return _counted_run(log, token, seconds)


@taskgate.task
def owner_header() -> str:
    """The ``taskgate_owner`` header of the message that ran this task, as the worker's Celery
    request holds it ('' without one)."""
    from celery import current_task

    return str(getattr(current_task.request, "taskgate_owner", "") or "")


@taskgate.task
async def async_where() -> str:
    """``<pid>:<runs>``: the process that ran it, and how many tasks its running event loop has
    run, this one included (counted on the loop object itself)."""
    import asyncio

    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    runs = getattr(loop, "taskgate_test_runs", 0) + 1
    loop.taskgate_test_runs = runs  # type: ignore[attr-defined]
    return f"{os.getpid()}:{runs}"


@taskgate.task
async def async_steps(log: str, token: str, seconds: float, started_file: str = "") -> str:
    """An ``async def`` task: log ``start``, await in small steps reporting progress, log
    ``end`` (or ``cancelled`` when its coroutine is cancelled, then re-raise)."""
    import asyncio

    with open(log, "a") as out:
        out.write(f"start {token} {os.getpid()}\n")
    if started_file:
        Path(started_file).write_text(str(os.getpid()))
    began = time.monotonic()
    try:
        while (elapsed := time.monotonic() - began) < seconds:
            taskgate.report_progress(elapsed, seconds)
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        with open(log, "a") as out:
            out.write(f"cancelled {token} {os.getpid()}\n")
        raise
    with open(log, "a") as out:
        out.write(f"end {token} {os.getpid()}\n")
    return token


@taskgate.task(retry=taskgate.RetryPolicy(transient=(Flaky,), max_retries=3, backoff=0.2, max_delay=0.5))
async def async_flaky(counter: str, failures: int) -> int:
    """:func:`flaky` as an ``async def`` task."""
    import asyncio

    await asyncio.sleep(0)
    path = Path(counter)
    seen = int(path.read_text()) if path.exists() else 0
    path.write_text(str(seen + 1))
    if seen < failures:
        raise Flaky(f"transient failure {seen + 1} of {failures}")
    return seen + 1


@taskgate.task(soft_time_limit=1)
async def async_soft_limited(log: str, token: str, seconds: float) -> str:
    """Awaits ``seconds`` under a soft time limit of 1 s; logs start and end."""
    import asyncio

    with open(log, "a") as out:
        out.write(f"start {token} {os.getpid()}\n")
    await asyncio.sleep(seconds)
    with open(log, "a") as out:
        out.write(f"end {token} {os.getpid()}\n")
    return token


@taskgate.task(time_limit=2)
async def async_time_boxed(log: str, token: str, seconds: float) -> str:
    """Awaits ``seconds`` under a hard time limit of 2 s: Celery kills the process past it."""
    import asyncio

    with open(log, "a") as out:
        out.write(f"start {token} {os.getpid()}\n")
    await asyncio.sleep(seconds)
    with open(log, "a") as out:
        out.write(f"end {token} {os.getpid()}\n")
    return token


@taskgate.task
async def async_stubborn(log: str, token: str, seconds: float) -> str:
    """Blocks its event loop (``time.sleep``): its coroutine cannot be cancelled, only
    ``terminate`` stops it. Logs start and end."""
    with open(log, "a") as out:
        out.write(f"start {token} {os.getpid()}\n")
    time.sleep(seconds)
    with open(log, "a") as out:
        out.write(f"end {token} {os.getpid()}\n")
    return token


@taskgate.task
def fan_out(count: int) -> list[str]:
    """A sync task that submits ``count`` ``add`` tasks (the blocking form) and returns their ids."""
    from taskgate.tasks.arithmetic import add

    return [add.submit_sync(x=i, y=i).id for i in range(count)]


@taskgate.task
async def async_fan_out(count: int) -> list[int]:
    """An async task that submits ``count`` ``add`` tasks and awaits their results."""
    from taskgate.tasks.arithmetic import add

    jobs = [await add.submit(x=i, y=1) for i in range(count)]
    return [await job.result(timeout=20) for job in jobs]


@taskgate.task
async def async_stray_cancel() -> None:
    """Awaits a task that gets cancelled: ``CancelledError`` escapes the coroutine, not on request."""
    import asyncio

    inner = asyncio.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    inner.cancel()
    await inner


@taskgate.task(soft_time_limit=1)
async def async_busy_callbacks(log: str, token: str, seconds: float) -> str:
    """Keeps its loop busy in plain callbacks (where asyncio logs and drops an exception a signal
    handler raises) for ``seconds``, under a soft time limit of 1 s; logs start and end."""
    import asyncio

    loop = asyncio.get_running_loop()
    with open(log, "a") as out:
        out.write(f"start {token} {os.getpid()}\n")
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        for _ in range(50):
            loop.call_soon(sum, range(20000))
        await asyncio.sleep(0)
    with open(log, "a") as out:
        out.write(f"end {token} {os.getpid()}\n")
    return token


@taskgate.task
def stamped(log: str, seconds: float = 0) -> str:
    """Append ``start <task id> <pid>`` to ``log``, sleep, then ``end <task id> <pid>``: each
    execution of each run (a schedule's runs share their arguments) counted by the task."""
    from celery import current_task

    return _counted_run(log, str(current_task.request.id), seconds)


@taskgate.task
def power(base: int, exponent: int) -> int:
    """``base ** exponent`` (the exponent at most 128): a result can be past 64 bits."""
    return int(base ** min(exponent, 128))


@taskgate.task(retry=taskgate.RetryPolicy(transient=(ValueError,), max_retries=2, backoff=0.1, max_delay=0.2))
def big_result(log: str, size: int) -> str:
    """Append a line to ``log`` at each start and return ``size`` characters: a result over
    TASKGATE_MAX_RESULT_BYTES (whose ResultTooLarge is a ValueError, yet never retried)."""
    with open(log, "a") as out:
        out.write(f"{os.getpid()}\n")
    return "x" * size


@taskgate.task(retry=taskgate.RetryPolicy(transient=(Flaky,), max_retries=20, backoff=5.0, max_delay=5.0))
def retried_forever(log: str) -> None:
    """Append the time to ``log`` at each start, then fail transiently (retries wait up to 5 s)."""
    with open(log, "a") as out:
        out.write(f"{time.time()!r}\n")
    raise Flaky("failing again")


def _admitted_run(log: str, token: str, seconds: float, hold: str) -> str:
    """Log ``start <token> <pid> <time>``, wait while the file ``hold`` exists (at most 60 s),
    sleep ``seconds``, log ``end <token> <pid> <time>``: the admission tests count executions
    and their overlaps by these lines."""
    with open(log, "a") as out:
        out.write(f"start {token} {os.getpid()} {time.time()!r}\n")
    began = time.monotonic()
    while hold and Path(hold).exists() and time.monotonic() - began < 60:
        time.sleep(0.01)
    time.sleep(seconds)
    with open(log, "a") as out:
        out.write(f"end {token} {os.getpid()} {time.time()!r}\n")
    return token


@taskgate.task(concurrency=taskgate.Concurrency(limit=2))
def paired(log: str, token: str, seconds: float = 0, hold: str = "") -> str:
    """At most 2 runs at once across the cluster: :func:`_admitted_run`."""
    return _admitted_run(log, token, seconds, hold)


@taskgate.task(concurrency=taskgate.Concurrency(limit=1))
def single_slot(log: str, token: str, seconds: float = 0, hold: str = "") -> str:
    """One run at a time across the cluster: :func:`_admitted_run`."""
    return _admitted_run(log, token, seconds, hold)


@taskgate.task(concurrency=taskgate.Concurrency(limit=2, key="owner"))
def per_owner(log: str, token: str, seconds: float = 0) -> str:
    """At most 2 runs of one owner at once: :func:`_admitted_run`."""
    return _admitted_run(log, token, seconds, "")


@taskgate.task(rate_limit="20/s", burst=2)
def metered(log: str, token: str) -> str:
    """Starts at most 20 per second across the cluster (bursts of 2): :func:`_admitted_run`."""
    return _admitted_run(log, token, 0, "")


@taskgate.task(rate_limit="10/s", rate_key="customer")
def metered_per_customer(log: str, token: str, customer: str) -> str:
    """Starts at most 10 per second per customer across the cluster: :func:`_admitted_run`."""
    return _admitted_run(log, token, 0, "")


@taskgate.task(retry=taskgate.RetryPolicy(transient=(Flaky,), max_retries=1, backoff=0.1, max_delay=0.2))
def gated(log: str, token: str, hold: str = "", failures: int = 0) -> str:
    """No declared limit (tests give it one at runtime): :func:`_admitted_run`, then fail
    transiently while this token has started at most ``failures`` times (1 retry)."""
    _admitted_run(log, token, 0, hold)
    with open(log) as seen:
        starts = sum(1 for line in seen if line.startswith(f"start {token} "))
    if starts <= failures:
        raise Flaky(f"transient failure {starts} of {failures}")
    return token


@taskgate.task
def shared_fairly(log: str, token: str, seconds: float = 0) -> str:
    """No limit (for fair queueing by owner): :func:`_admitted_run`."""
    return _admitted_run(log, token, seconds, "")


def _note(log: str, line: str) -> None:
    """Append one line to ``log`` (none when empty): executions counted by the task itself."""
    if log:
        with open(log, "a") as out:
            out.write(line + "\n")


@taskgate.task
def numbers(count: int, log: str = "") -> list[int]:
    """0 to count - 1 (a workflow's list to map over)."""
    _note(log, f"numbers {count}")
    return list(range(count))


@taskgate.task
def square(n: int, log: str = "", seconds: float = 0) -> int:
    """n squared (a workflow's map item), after ``seconds``."""
    _note(log, f"start square {n}")
    time.sleep(seconds)
    _note(log, f"end square {n}")
    return n * n


@taskgate.task
def total(values: list[int], log: str = "") -> int:
    """The sum of ``values`` (a workflow's fan-in)."""
    _note(log, f"total {len(values)}")
    return sum(values)


@taskgate.task(queue="slowlane")
def lane_square(n: int, log: str = "") -> int:
    """n squared on the `slowlane` queue, which the session's worker does not consume: a
    workflow's runs that wait in Redis until a worker for that queue starts."""
    _note(log, f"start lane_square {n}")
    _note(log, f"end lane_square {n}")
    return n * n

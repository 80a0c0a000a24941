"""Checked by mypy --strict (tests/test_typing.py), never run: what a user's type checker infers."""

from __future__ import annotations

from typing import Any, assert_type

from myapp.tasks import Invoice, make_invoice
from tasks import add, countdown  # examples/yourapp

import taskgate


async def inferred(tg: taskgate.Taskgate) -> None:
    job = await add.submit(x=1, y=2)
    assert_type(job, taskgate.Job[int])
    assert_type(await job.result(timeout=10), int)
    assert_type(await countdown.submit(seconds=3), taskgate.Job[str])  # an async def task
    assert_type(await tg.submit(make_invoice, customer="ada", amounts_cents=[1]), taskgate.Job[Invoice])
    assert_type(await add.with_options(countdown=5, owner="ann").submit(1, 2), taskgate.Job[int])
    assert_type(add.submit_sync(x=1, y=2).result(), int)
    assert_type(await job.status(), taskgate.TaskRecord)
    assert_type(await tg.job(job.id), taskgate.Job[Any])  # no task=: its result is not typed
    assert_type(await tg.job(job.id, add), taskgate.Job[int])
    with taskgate.Taskgate() as blocking:  # opened from blocking code, on a thread of its own
        assert_type(blocking, taskgate.Taskgate)


async def refused() -> None:
    await add.submit(x="one", y=2)  # type: ignore[arg-type]
    await add.submit(x=1)  # type: ignore[call-arg]

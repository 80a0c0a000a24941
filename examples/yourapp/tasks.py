"""Your tasks: plain functions with type hints, declared with @taskgate.task."""

from __future__ import annotations

import asyncio

import taskgate


@taskgate.task
def add(x: int, y: int) -> int:
    """Add two integers."""
    return x + y


@taskgate.task
async def countdown(seconds: int) -> str:
    """Count down, awaiting a second per step and reporting progress (an async def task)."""
    for done in range(1, seconds + 1):
        await asyncio.sleep(1)
        taskgate.report_progress(done, seconds)
    return "liftoff"

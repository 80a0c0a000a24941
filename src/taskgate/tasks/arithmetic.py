"""Arithmetic: the tutorial's ``add``."""

from __future__ import annotations

from celery import shared_task

from ..constants import INT64_MAX, INT64_MIN


def add_numbers(x: int, y: int) -> int:
    """Return ``x + y``; the sum must fit in a signed 64-bit integer, like the inputs."""
    total = x + y
    if not INT64_MIN <= total <= INT64_MAX:
        raise OverflowError(f"{x} + {y} does not fit in a signed 64-bit integer")
    return total


@shared_task(name="taskgate.add")
def add(x: int, y: int) -> int:
    """Add two integers (the tutorial's task)."""
    return add_numbers(x, y)

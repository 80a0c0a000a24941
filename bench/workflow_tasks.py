"""The tasks the workflows section of ``make bench`` (bench/workflows.py) runs: its API and
worker import this module (``TASKGATE_TASK_MODULES=bench.workflow_tasks``). Trivial on purpose:
what is measured is the graph's machinery, not the work."""

from __future__ import annotations

import taskgate


@taskgate.task
def numbers(count: int) -> list[int]:
    """0 to count - 1: the list a workflow maps over."""
    return list(range(count))


@taskgate.task
def square(n: int) -> int:
    """n squared: one item of the map (and the batch's task)."""
    return n * n


@taskgate.task
def total(values: list[int]) -> int:
    """The sum of ``values``: the fan-in."""
    return sum(values)

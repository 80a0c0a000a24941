"""The task the admission section of ``make bench`` (bench/admission.py) runs: the API and the
workers it starts import this module (``TASKGATE_TASK_MODULES=bench.admission_tasks``)."""

from __future__ import annotations

import time

import taskgate


@taskgate.task(concurrency=taskgate.Concurrency(limit=2, key="owner"))
def bench_nap(seconds: float) -> float:
    """Sleep ``seconds`` (a task of known length); at most 2 runs per owner at once."""
    time.sleep(seconds)
    return seconds

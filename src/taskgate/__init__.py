"""taskgate: a truthful, non-blocking HTTP front door for Celery task queues."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("taskgate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

from .exceptions import TaskCancelled
from .registry import RetryPolicy, task
from .worker.running import cancel_requested, raise_if_cancelled, report_progress

__all__ = [
    "RetryPolicy",
    "TaskCancelled",
    "__version__",
    "cancel_requested",
    "raise_if_cancelled",
    "report_progress",
    "task",
]

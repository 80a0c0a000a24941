"""taskgate: a truthful, non-blocking HTTP front door for Celery task queues, and the library
behind it (``Taskgate``, ``@task``, ``await task.submit(...)``, ``Job``)."""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("taskgate")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

from .config import Settings
from .declare import DeclaredTask, SubmitOptions, Submittable, task
from .exceptions import (
    BackendUnavailable,
    ConfigurationError,
    Conflict,
    Forbidden,
    InvalidArguments,
    QuotaExceeded,
    ResultTimeout,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskGateError,
    TaskNotFound,
    Unauthorized,
    Unavailable,
    UnknownTask,
    WorkflowNotFound,
)
from .limits import Concurrency
from .records import TaskRecord
from .registry import RetryPolicy
from .schedule import Timing, cron, every
from .states import TaskState
from .worker.running import cancel_requested, raise_if_cancelled, report_progress

if TYPE_CHECKING:
    from .gate import Taskgate
    from .producer.job import Job, JobEvent, SyncJob
    from .producer.workflow_run import WorkflowRun
    from .workflow.builder import Workflow

#: Imported on first use: a worker or a CLI command that never uses them does not pay for
#: FastAPI and the async clients at startup.
_LAZY = {"Taskgate": ".gate", "Job": ".producer.job", "JobEvent": ".producer.job", "SyncJob": ".producer.job",
         "Workflow": ".workflow.builder", "WorkflowRun": ".producer.workflow_run"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'taskgate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "BackendUnavailable",
    "Concurrency",
    "ConfigurationError",
    "Conflict",
    "DeclaredTask",
    "Forbidden",
    "InvalidArguments",
    "Job",
    "JobEvent",
    "QuotaExceeded",
    "ResultTimeout",
    "RetryPolicy",
    "Settings",
    "SubmitOptions",
    "Submittable",
    "SyncJob",
    "TaskCancelled",
    "TaskExpired",
    "TaskFailed",
    "TaskGateError",
    "TaskNotFound",
    "TaskRecord",
    "TaskState",
    "Taskgate",
    "Timing",
    "Unauthorized",
    "Unavailable",
    "UnknownTask",
    "Workflow",
    "WorkflowNotFound",
    "WorkflowRun",
    "__version__",
    "cancel_requested",
    "cron",
    "every",
    "raise_if_cancelled",
    "report_progress",
    "task",
]

"""The one exception tree of taskgate.

::

    TaskGateError
    ├── ConfigurationError      settings are missing or contradict each other
    ├── BackendUnavailable      Redis or the broker did not answer within the deadline
    └── TaskNotFound            no record of this task id (never submitted, or expired)

``api/errors.py`` maps each one to an HTTP answer in one place.
"""

from __future__ import annotations


class TaskGateError(Exception):
    """Base class of every error taskgate raises on purpose."""


class ConfigurationError(TaskGateError):
    """Raised when settings are missing or inconsistent; the message says what to set."""


class BackendUnavailable(TaskGateError):
    """Raised when the broker or the result store failed or missed its deadline."""

    def __init__(self, component: str, detail: str) -> None:
        super().__init__(f"{component} unavailable: {detail}")
        self.component = component
        self.detail = detail


class TaskNotFound(TaskGateError):
    """Raised when a task id has no record: it was never submitted or has expired."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}: it was never submitted or has expired")
        self.task_id = task_id

"""The one exception tree of taskgate.

::

    TaskGateError
    ├── ConfigurationError      settings are missing or contradict each other
    ├── BackendUnavailable      Redis or the broker did not answer within the deadline
    ├── TaskNotFound            no record of this task id (never submitted, or expired)
    ├── UnknownTask             the task name is not on the allow-list
    ├── InvalidArguments        arguments that validate but cannot travel as portable JSON
    ├── Conflict                the request contradicts the task's state or an idempotency key
    ├── PayloadTooLarge         an upload or argument is over its size limit
    ├── Unauthorized            no API key, or a bad or revoked one
    ├── Forbidden               a valid key without the admin right on an admin endpoint
    ├── QuotaExceeded           the owner's submit rate or in-flight limit is reached
    └── TaskCancelled           raised inside a running task that was asked to stop

``api/errors.py`` maps each one to an HTTP answer in one place.
"""

from __future__ import annotations


class TaskGateError(Exception):
    """Base class of every error taskgate raises on purpose."""


class ConfigurationError(TaskGateError):
    """Raised when settings are missing or inconsistent; the message says what to set."""


class BackendUnavailable(TaskGateError):
    """Raised when the broker or the result store failed or missed its deadline."""

    def __init__(self, component: str, detail: str, task_id: str | None = None) -> None:
        super().__init__(f"{component} unavailable: {detail}")
        self.component = component
        self.detail = detail
        self.task_id = task_id  # a submit's: the task it tried to queue


class TaskNotFound(TaskGateError):
    """Raised when a task id has no record: it was never submitted or has expired."""

    def __init__(self, task_id: str, what: str = "task") -> None:
        if what == "task":
            super().__init__(f"no task with id {task_id!r}: it was never submitted or has expired")
        else:
            super().__init__(f"no {what} with id {task_id!r}")
        self.task_id = task_id


class UnknownTask(TaskGateError):
    """Raised when a task name is not one of the declared (allow-listed) tasks."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no task named {name!r}; GET /tasks/catalogue lists the tasks you can run")
        self.name = name


class InvalidArguments(TaskGateError):
    """Raised when arguments cannot be sent as portable JSON (an integer beyond 64 bits, a string
    that is not valid Unicode)."""


class Conflict(TaskGateError):
    """Raised when a request contradicts the task's state (cancel a finished task) or reuses an
    Idempotency-Key with a different body."""


class PayloadTooLarge(TaskGateError):
    """Raised when an upload is larger than ``TASKGATE_MAX_UPLOAD_BYTES``."""


class Unauthorized(TaskGateError):
    """Raised when auth is on and the request has no valid API key."""


class Forbidden(TaskGateError):
    """Raised when a non-admin key calls an admin-only endpoint."""


class QuotaExceeded(TaskGateError):
    """Raised when an owner's submit rate or in-flight limit is reached."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class TaskCancelled(TaskGateError):
    """Raised inside a running task (by ``raise_if_cancelled``) once it was asked to stop."""


def error_envelope(exc: BaseException, *, retryable: bool) -> dict[str, object]:
    """A client-safe description of ``exc``: its type name and message, never a traceback."""
    return {"type": type(exc).__name__, "message": str(exc), "retryable": retryable}

"""The one exception tree of taskgate.

::

    TaskGateError
    ├── ConfigurationError      settings are missing or contradict each other
    ├── Unavailable             Redis or the broker did not answer within the deadline
    │                           (also named BackendUnavailable)
    ├── TaskNotFound            no record of this task id (never submitted, or expired)
    │   └── WorkflowNotFound    no workflow with this id
    ├── UnknownTask             the task name is not on the allow-list
    ├── NoOverride              DELETE /limits/{task}: the task has no runtime override
    ├── InvalidArguments        arguments or submit options that do not validate (``errors``)
    ├── Conflict                the request contradicts the task's state or an idempotency key
    ├── PayloadTooLarge         an upload or argument is over its size limit
    ├── Unauthorized            no API key, or a bad or revoked one
    ├── Forbidden               a valid key without the admin right on an admin endpoint
    ├── QuotaExceeded           the owner's submit rate or in-flight limit is reached
    ├── TaskFailed              ``await job.result()``: the task failed (carries its error)
    ├── ResultTimeout           ``await job.result(timeout=...)``: not ended in time (also a
    │                           ``TimeoutError``)
    ├── TaskCancelled           ``await job.result()``: the task was cancelled; also raised
    │                           inside a running task that was asked to stop
    └── TaskExpired             ``await job.result()``: the task was not started before its
                                expiry and never ran

``api/errors.py`` maps each one to an HTTP answer in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


class TaskGateError(Exception):
    """Base class of every error taskgate raises on purpose."""


class ConfigurationError(TaskGateError):
    """Raised when settings are missing or inconsistent; the message says what to set."""


class Unavailable(TaskGateError):
    """Raised when Redis or the broker failed or missed its deadline
    (``TASKGATE_BACKEND_TIMEOUT``). The API answers it with 503 and ``Retry-After``.

    A submit's says what became of its task in :attr:`outcome`: ``"not_queued"`` when that is
    known (its script never reached Redis, or reached it past the deadline and refused): it
    will never run; ``"unknown"`` when the script was sent and its answer did not come in time
    (or the connection broke): it may have been queued and may run. ``job.status()`` (``GET
    /tasks/{id}``) tells once Redis answers (``TaskNotFound``, 404: it was not and never will
    be), or submit again with the same Idempotency-Key. ``None`` for any other call."""

    def __init__(self, component: str, detail: str, task_id: str | None = None,
                 outcome: Literal["not_queued", "unknown"] | None = None) -> None:
        super().__init__(f"{component} unavailable: {detail}")
        self.component = component
        self.detail = detail
        self.task_id = task_id  # a submit's: the task it tried to queue
        self.outcome = outcome


class TaskNotFound(TaskGateError):
    """Raised when a task id has no record: it was never submitted or has expired."""

    def __init__(self, task_id: str, what: str = "task") -> None:
        if what == "task":
            super().__init__(f"no task with id {task_id!r}: it was never submitted or has expired")
        else:
            super().__init__(f"no {what} with id {task_id!r}")
        self.task_id = task_id


class WorkflowNotFound(TaskNotFound):
    """Raised when a workflow id has no workflow (never submitted, or expired), or none the
    caller may see."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(workflow_id, "workflow")


class UnknownTask(TaskGateError):
    """Raised when a task name is not one of the declared (allow-listed) tasks."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no task named {name!r}; GET /tasks/catalogue lists the tasks you can run")
        self.name = name


class NoOverride(TaskGateError):
    """Raised when asked to remove the runtime limits override of a task that has none (a 404
    ``no_override``)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"task {name!r} has no limits override to remove (PUT /limits/{name} sets one; "
                         "GET /limits lists them)")
        self.name = name


#: The name earlier versions used; the same class.
BackendUnavailable = Unavailable


@dataclass(frozen=True, slots=True)
class FieldError:
    """One thing wrong with a request: where (``loc``: ``("argument", "x")``, ``("option",
    "countdown")``; over HTTP ``("body", "x")``, ``("query", "eta")``), what (``msg``), and
    pydantic's kind of error (``type``)."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"

    @property
    def field(self) -> str:
        """The field's dotted path without its place (``"x"``, ``"items.3.x"``); "" for the whole."""
        return ".".join(str(part) for part in self.loc[1:])


class InvalidArguments(TaskGateError):
    """Raised when a task's arguments or a submission's options do not validate (one validator,
    ``taskgate.validation``, for Python and HTTP), or arguments cannot be sent as portable JSON
    (an integer beyond 64 bits, a string that is not valid Unicode). Nothing was sent.
    ``errors``: each :class:`FieldError` (empty when the message is all there is); over HTTP a
    422 whose ``error.errors`` lists them."""

    def __init__(self, message: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.errors: list[FieldError] = list(errors)


class UnsafeURL(InvalidArguments):
    """Raised when a webhook URL may not be called (``webhooks_guard.check_url``): not https
    (without ``TASKGATE_WEBHOOK_ALLOW_HTTP``), or its host is or resolves to a loopback, private,
    link-local, reserved, multicast or metadata address (without
    ``TASKGATE_WEBHOOK_ALLOW_PRIVATE``). At ``POST /webhooks`` (and ``PATCH``) a 422; at send
    time the sender does not connect, and records its message as the attempt's error.
    ``temporary``: the host did not resolve (a DNS failure may pass; the others will not)."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message, [FieldError(("body", "url"), message)])
        self.temporary = temporary


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


class TaskFailed(TaskGateError):
    """Raised by ``await job.result()`` when the task ended ``failed`` (its own exception, a
    time limit, or retries exhausted). ``error`` is the envelope the API shows:
    ``{"type", "message", "retryable"}``."""

    def __init__(self, task_id: str, error: dict[str, object] | None) -> None:
        self.task_id = task_id
        self.error: dict[str, object] = error if isinstance(error, dict) else {
            "type": "unknown", "message": "the task failed; its error could not be read", "retryable": False}
        super().__init__(f"task {task_id} failed: {self.error.get('type')}: {self.error.get('message')}")


class TaskCancelled(TaskGateError):
    """Raised by ``await job.result()`` when the task ended ``cancelled``; and inside a running
    task (by ``raise_if_cancelled``) once it was asked to stop."""

    def __init__(self, message: str = "cancelled on request", task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class TaskExpired(TaskGateError):
    """Raised by ``await job.result()`` when the task ended ``expired``: it was not started
    before its expiry (``expires``) and never ran. ``error`` is the record's envelope, saying
    when it expired."""

    def __init__(self, task_id: str, error: dict[str, object] | None = None) -> None:
        self.task_id = task_id
        self.error: dict[str, object] = error if isinstance(error, dict) else {
            "type": "Expired", "message": "not started before its expiry: it will never run",
            "retryable": False}
        super().__init__(f"task {task_id} expired: {self.error.get('message')}")


class ResultTimeout(TaskGateError, TimeoutError):
    """Raised by ``await job.result(timeout=...)`` when the task has not ended within
    ``timeout`` seconds; it goes on: ask again later by ``task_id``. A ``TimeoutError`` too."""

    def __init__(self, task_id: str, state: str, timeout: float) -> None:
        super().__init__(f"task {task_id} is still {state} after {timeout:g} s")
        self.task_id = task_id
        self.state = state


def error_envelope(exc: BaseException, *, retryable: bool) -> dict[str, object]:
    """A client-safe description of ``exc``: its type name and message, never a traceback."""
    return {"type": type(exc).__name__, "message": str(exc), "retryable": retryable}

"""Task states as taskgate reports them, and how Celery's states map onto them."""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    """Where a submitted task is in its life."""

    #: Accepted and waiting in the queue for a worker.
    QUEUED = "queued"
    #: A worker is running it.
    STARTED = "started"
    #: It failed with a transient error and waits for another attempt.
    RETRYING = "retrying"
    #: It finished and returned a result.
    SUCCEEDED = "succeeded"
    #: It raised, or ran out of attempts; ``error`` says why.
    FAILED = "failed"
    #: It was cancelled before or while running.
    CANCELLED = "cancelled"
    #: It was not started before its expiry (``expires``) and never will be.
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        """True once the task will not change state any more."""
        return self in _TERMINAL


_TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.EXPIRED})

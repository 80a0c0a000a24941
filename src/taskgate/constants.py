"""Every Redis key prefix and default that taskgate uses, in one place."""

from __future__ import annotations

#: ``taskgate:task:<id>`` -> JSON record written at submission (name, created_at);
#: expires with the result (``result_ttl``). Tells "queued" apart from "unknown".
TASK_RECORD_PREFIX = "taskgate:task:"

#: Celery's Redis result backend stores ``celery-task-meta-<id>`` (JSON); taskgate reads it.
CELERY_RESULT_PREFIX = "celery-task-meta-"

#: Seconds an HTTP client should wait before retrying after a 503.
RETRY_AFTER_SECONDS = 1

#: Signed 64-bit bounds: the range of integers the HTTP API accepts and returns.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def task_record_key(task_id: str) -> str:
    """Key of taskgate's own record of a submitted task."""
    return TASK_RECORD_PREFIX + task_id


def celery_result_key(task_id: str) -> str:
    """Key under which Celery's Redis backend stores a task's state and result."""
    return CELERY_RESULT_PREFIX + task_id

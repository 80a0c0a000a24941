"""A task as the API shows it (``GET /tasks/{task_id}``, :class:`TaskInfo`), built from its record
by :meth:`TaskInfo.from_record`.

Pydantic only, no FastAPI: the API answers with it (``api/schemas.py`` re-exports it, its routes
subclass it per task with a typed ``result``) and the workers' webhook deliverer sends the same
view as a run's ``data`` (``worker/webhook_payload.py``), so the two cannot drift apart.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from ..records import TaskRecord
from ..states import TaskState

log = logging.getLogger("taskgate.api")


class ErrorBody(BaseModel):
    """The stable error envelope: what went wrong, and whether trying again may help."""

    type: str = Field(description="Stable machine-readable error type.", examples=["task_not_found"])
    message: str = Field(description="What went wrong and what to do about it.")
    retryable: bool = Field(description="True when the same request may succeed later.")

    @classmethod
    def from_stored(cls, stored: Any) -> ErrorBody | None:
        """A record's ``error`` field; None when absent or not an error envelope."""
        try:
            return cls.model_validate(stored) if stored is not None else None
        except ValidationError:
            log.warning("stored error unreadable, left out: %r", stored)
            return None


class Progress(BaseModel):
    """How far a running task is, as it last reported (numbers keep the type they were given)."""

    done: int | float
    total: int | float
    percent: float
    message: str | None = None


class TimelineEntry(BaseModel):
    """A state the task entered, and when."""

    state: TaskState
    at: datetime = Field(description="When: `created_at`, `started_at` or `finished_at` for those "
                         "states; for the others (retrying, queued again) Redis's clock.")
    attempt: int = Field(default=0, description="How many times a worker had started it by then.")
    worker: str | None = Field(default=None, description="The worker that started it (on `started`).")


class TaskInfo(BaseModel):
    """Everything known about one task. Subclassed per task with a typed `result`."""

    task_id: str
    name: str = Field(description="The task's name in the catalogue.")
    owner: str | None = Field(default=None, description="Who submitted it (the API key's owner); "
                              "null for tasks submitted while auth is off.")
    state: TaskState
    waiting_for: Literal["rate", "slot", "turn", "parents"] | None = Field(
        default=None, description="Why a queued run has not gone to its queue yet: its task's rate "
        "limit (`rate`), a free concurrency slot (`slot`), its turn among owners (`turn`), or, for a "
        "workflow's node, parents that have not all succeeded (`parents`); null once it has gone (or "
        "never had to wait). See `GET /limits`.")
    result: Any = Field(default=None, description="The return value, once `succeeded`.")
    error: ErrorBody | None = Field(default=None, description="Why it failed or expired (or the last "
                                    "transient error while `retrying`).")
    progress: Progress | None = None
    attempts: int = Field(default=0, description="How many times a worker started it.")
    deliveries: int = Field(default=0, description="How many times the current attempt was delivered to a "
                            "worker: more than 1 when a worker died running it (it then ran again). Kept "
                            "while the task may run and when it fails; 0 once it has succeeded.")
    worker: str | None = Field(default=None, description="The worker that started it last.")
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = Field(default=None, description="When it runs again, while "
                                             "`retrying`.")
    cancel_requested_at: datetime | None = Field(
        default=None, description="When cancel was first asked (`POST /tasks/{task_id}/cancel`), kept "
        "whatever state it then ends in. A task that checks (`raise_if_cancelled`, `cancel_requested`; "
        "an `async def` task at its next `await`) ends `cancelled`; a sync task that never checks runs "
        "to its end and ends in its own state (`succeeded`, `failed`) with this set; `?terminate=true` "
        "stops it (`cancelled`).")
    arguments: dict[str, Any] | None = Field(default=None, description="What it was called with.")
    expires_at: datetime | None = Field(default=None, description="Its expiry (`?expires=`): not "
                                        "started by then, it ends `expired` and never runs (null: none).")
    replay_of: str | None = Field(default=None, description="The task it replays "
                                  "(`POST /tasks/{task_id}/replay`), if any.")
    schedule_id: str | None = Field(default=None, description="The schedule it is a run of, if any.")
    workflow_id: str | None = Field(default=None, description="The workflow it is a node of, if any "
                                    "(`GET /workflows/{workflow_id}`).")
    node: str | None = Field(default=None, description="Its node in that workflow.")
    item: int | None = Field(default=None, description="For a run of a map node: the index of its item in "
                             "the list mapped over.")
    skipped: str | None = Field(default=None, description="Why its workflow never ran it (it ended "
                                "`cancelled`): a node it depends on failed, or the workflow stopped.")
    tick: datetime | None = Field(default=None, description="The tick of its schedule it stands for "
                                  "(null for a run started by hand: `POST /schedules/{id}/run`).")
    trace_id: str | None = Field(default=None, description="The OpenTelemetry trace its submit belongs "
                                 "to (32 hex digits): the submitting request's trace, through the queue "
                                 "to its runs. Null when it was submitted without tracing. The "
                                 "dashboard links it through TASKGATE_TRACE_URL (`GET /ui/session`'s "
                                 "`trace_url`: replace `{trace_id}` with it).")
    seq: int = Field(default=0, description="How many changes it has had since it was submitted (0 "
                     "until a worker takes it): of two views of a task, the one with the higher `seq` is "
                     "the later (its events' ids count the same).")
    timeline: list[TimelineEntry] | None = Field(default=None, description="The states it entered, "
                                                 "oldest first (the first and the latest 49 of them).")

    @classmethod
    def from_record(cls, record: TaskRecord) -> TaskInfo:
        """Build from a task's record. A stored value that does not fit its field (a malformed
        error or progress, a result that does not match the task's result type) is left out
        and logged, so one bad record cannot fail a read or a whole listing."""
        data = {name: value for name in cls.model_fields
                if (value := getattr(record, name, None)) is not None}
        data["state"] = record.state or TaskState.QUEUED  # unreadable: not known to have ended
        if isinstance(record.args, dict) and "arguments" in cls.model_fields:
            data["arguments"] = record.args
        data["name"] = record.name or ""
        if record.timeline and "timeline" in cls.model_fields:
            data["timeline"] = [TimelineEntry(state=change.state, at=change.at, attempt=change.attempt,
                                              worker=change.worker) for change in record.timeline]
        else:
            data.pop("timeline", None)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]} - _REQUIRED
            if not bad:
                raise
            log.warning("task %s: stored %s unreadable, left out (%s)", record.task_id,
                        ", ".join(sorted(bad)), exc.errors(include_url=False))
            return cls.model_validate({key: value for key, value in data.items() if key not in bad})


#: Fields a record cannot be shown without.
_REQUIRED = frozenset({"task_id", "name", "state"})

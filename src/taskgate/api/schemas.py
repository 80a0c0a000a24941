"""The JSON shapes the HTTP API answers with. A task's own view (:class:`TaskInfo` and its
parts) lives in :mod:`taskgate.producer.task_view`, free of FastAPI for the workers' webhooks,
and is re-exported here."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
)

# re-exported: the routes, and users' code, import them from here
from ..producer.task_view import ErrorBody as ErrorBody
from ..producer.task_view import Progress as Progress
from ..producer.task_view import TaskInfo as TaskInfo
from ..producer.task_view import TimelineEntry as TimelineEntry
from ..records import TaskRecord
from ..states import TaskState

#: The earliest `eta` taken (a past one runs at once).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stored_time(value: Any) -> datetime | None:
    """A stored time (epoch seconds) as a UTC datetime; None for a value no datetime can hold
    (a record written by hand or by a bug must not break a read)."""
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


class JSONBytes(Response):
    """A JSON answer serialised by orjson, for the submit routes: they declare their model for
    OpenAPI (``response_model``) and return this, which FastAPI sends without validating the
    model again."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class FieldProblem(BaseModel):
    """One bad field of a 422 (``InvalidArguments.errors`` in Python)."""

    loc: list[str | int] = Field(description='Where: `["body", "x"]`, `["body", "items", 3, "x"]`, '
                                 '`["query", "countdown"]`, `["header", "Idempotency-Key"]`.')
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="The kind of error (pydantic's, or taskgate's own: `countdown_range`, "
                      "`eta_naive`, `eta_range`, `countdown_and_eta`, `priority_range`, `expires_range`).")


class ErrorDetail(ErrorBody):
    """An error answer's body: an :class:`ErrorBody`, on a 422 each bad field, and on a submit's
    503 the task it tried."""

    errors: list[FieldProblem] | None = Field(default=None, description="On a 422: each bad field, "
                                              "as the message names them.")
    task_id: str | None = Field(default=None, description="On a 503 from a submit: the id of the task "
                                "it tried to queue (the message says whether it will never run).")
    outcome: Literal["not_queued", "unknown"] | None = Field(
        default=None, description="On a 503 from a submit: `not_queued` when it is known that the task "
        "was not queued and will never run (its submit never reached Redis, or came past the "
        "deadline); `unknown` when the submit reached Redis and its answer did not come in time: "
        "the task may run. `GET /tasks/{task_id}` tells once Redis answers (404: it was not "
        "queued), or submit again with the same Idempotency-Key.")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer of taskgate."""

    error: ErrorDetail


class TaskCreated(BaseModel):
    """A task was accepted and is queued."""

    task_id: str = Field(description="The id to ask about with GET /result/{task_id}.")


class TutorialResult(BaseModel):
    """The tutorial's result shape; `pending` covers queued, started and retrying; `expired`: it
    was not started before its expiry (`?expires=`) and never will be."""

    status: Literal["pending", "completed", "failed", "cancelled", "expired"]
    result: JsonValue = Field(default=None, description="The task's return value, once completed.")
    error: ErrorBody | None = Field(default=None, description="Why the task failed or expired, if it did.")


class TaskAccepted(BaseModel):
    """A task was accepted; follow `Location` (or GET /tasks/{task_id}) to see how it goes."""

    task_id: str
    name: str
    state: TaskState = TaskState.QUEUED


class TaskReplayed(TaskAccepted):
    """A replay was accepted: a new task, with the same arguments."""

    replay_of: str


class BatchOutcome(BaseModel):
    """One item of a batch: its task id, or why it was refused (exactly one of the two is set)."""

    task_id: str | None = Field(default=None, description="The queued task's id; null if refused.")
    error: ErrorBody | None = Field(default=None, description="Why the item was refused; null if "
                                    "queued. `invalid_request`: the message names each bad field as "
                                    "`items.<index>.<field>`, as a 422 does; `quota_exceeded`: "
                                    "retryable; `backend_unavailable`: it reached Redis past the "
                                    "deadline and was not queued (retryable).")


class BatchAccepted(BaseModel):
    """A batch with at least one valid item: one outcome per item, in the order given."""

    tasks: list[BatchOutcome]


class ResultsQuery(BaseModel):
    """Which tasks to report on, and how long to wait for them to end."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    task_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1,
                                                                                 max_length=1000)
    wait: float = Field(default=0, ge=0, le=30, description="Seconds to wait until all have ended.")


class ResultsPage(BaseModel):
    """The tasks asked about, in order; null for an id that is unknown (or not yours)."""

    tasks: list[TaskInfo | None]


class TaskPage(BaseModel):
    """One page of the task history, newest first."""

    tasks: list[TaskInfo]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")


class DeadLetter(BaseModel):
    """A task that exhausted its retries or deliveries, or that no worker has."""

    task_id: str
    name: str
    reason: Literal["max_retries", "max_deliveries", "unregistered"] = Field(
        description="`max_retries`: transient errors outlasted its retry policy; `max_deliveries`: "
        "its worker died every time it ran; `unregistered`: no live worker had the task (its module "
        "missing from the workers' TASKGATE_TASK_MODULES) for TASKGATE_UNREGISTERED_TIMEOUT seconds.")
    attempts: int
    deliveries: int = Field(description="Deliveries of the last attempt.")
    error: ErrorBody | None
    arguments: dict[str, Any] | None = Field(description="What it was called with.")
    dead_at: datetime

    @classmethod
    def from_record(cls, record: TaskRecord, dead_at: float) -> DeadLetter:
        """Build from a task's record and the time it became a dead letter (its score)."""
        reason = record.dead_reason if record.dead_reason in _DEAD_REASONS else "max_retries"
        return cls(task_id=record.task_id, name=record.name or "", reason=reason,  # type: ignore[arg-type]
                   attempts=record.attempts, deliveries=record.deliveries,
                   error=ErrorBody.from_stored(record.error),
                   arguments=record.args if isinstance(record.args, dict) else None,
                   dead_at=stored_time(dead_at) or EPOCH)


_DEAD_REASONS = frozenset({"max_retries", "max_deliveries", "unregistered"})


class DeadLetterPage(BaseModel):
    """One page of dead letters, newest first."""

    dead_letters: list[DeadLetter]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")


class CatalogueEntry(BaseModel):
    """A task that can be submitted with POST /tasks/{name}."""

    name: str
    summary: str
    queue: str | None
    arguments: dict[str, Any] = Field(description="JSON schema of the request body.")
    result: dict[str, Any] = Field(description="JSON schema of the result.")


class StoredFile(BaseModel):
    """An upload, ready for process_file."""

    file_id: str
    filename: str | None
    content_type: str | None
    size: int = Field(description="Bytes received.")


class Health(BaseModel):
    """The process answers; says nothing about Redis."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether the broker and the result backend answer within the deadline."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description='Each component: "ok" or the problem seen.')


class LimitSet(BaseModel):
    """A task's limits: its rate and burst, its concurrency limit and the weights of its
    concurrency key values (null: no such limit)."""

    rate_limit: str | None = Field(description='Runs that may start per period, e.g. `"100/m"` (null: no '
                                   "rate limit).")
    burst: int | None = Field(description="Runs that may start at once after a quiet spell (null with no "
                              "rate limit).")
    concurrency: int | None = Field(description="Most runs with the same concurrency key at once, across "
                                    "the cluster (null: no concurrency limit).")
    weights: dict[str, int] | None = Field(
        default=None, description="Concurrency key values (an owner, or the key argument's value as text) "
        "and their weights: a key of weight w may run `concurrency` × w at once, so it gets w times the "
        "share of a key not listed (weight 1) when workers are the bottleneck (null: none; only with a "
        "concurrency limit). TASKGATE_FAIR_WEIGHTS, the owners' weights in fair queueing, is a setting "
        "of the workers and not shown here.")


class LimitOverride(BaseModel):
    """The parts of a task's limits set at runtime (`PUT /limits/{task}`): a field present replaces
    the declared one (null: no such limit); a field left out keeps the declared value."""

    rate_limit: str | None = Field(default=None, description='e.g. `"10/s"`; null: no rate limit.')
    burst: int | None = Field(default=None, description="Given with the rate limit it belongs to.")
    concurrency: int | None = Field(default=None, description="null: no concurrency limit.")
    weights: dict[str, int] | None = Field(default=None, description="null: the declared weights dropped "
                                           "(every key weight 1).")


class LimitKey(BaseModel):
    """One key of a task's limits in use: a lane (a rate key and a concurrency key value, with runs
    waiting) or a concurrency key holding slots."""

    rate_key: str | None = Field(description='The rate key\'s value (`""`: one budget for the whole task); '
                                 "null for a concurrency key with no run waiting.")
    concurrency_key: str | None = Field(description='The concurrency key\'s value (`""`: one limit for '
                                        "the whole task).")
    running: int = Field(description="Runs holding a slot of this concurrency key now.")
    waiting: int = Field(description="Runs of this lane waiting in taskgate's Redis to be admitted.")
    next_admission_at: datetime | None = Field(description="When the rate limit next lets a waiting run "
                                               "of this lane go (null: not held back by its rate).")


class TaskLimitsInfo(BaseModel):
    """One task's admission limits: declared, overridden at runtime, in effect, and their keys in use."""

    task: str = Field(description="The task's name.")
    declared: LimitSet = Field(description="What its declaration gives (`@taskgate.task(rate_limit=..., "
                               "burst=..., concurrency=...)`).")
    override: LimitOverride | None = Field(description="What `PUT /limits/{task}` set, only the parts it "
                                           "set (null: no override).")
    effective: LimitSet = Field(description="The limits that apply now: the declared ones, each part "
                                "replaced by the override's.")
    source: Literal["declared", "override"] = Field(description="`override` while an override is set.")
    keys: list[LimitKey] = Field(description="Its keys in use, those with most runs waiting first (at most "
                                 "100).")
    more_keys: int = Field(default=0, description="Keys in use left out of `keys`.")


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


#: OpenAPI entries for the errors endpoints can answer with.
ERRORS: dict[int, dict[str, Any]] = {
    404: _error("No such task (never submitted, expired, or not in the catalogue)."),
    401: _error("No API key, or a bad or revoked one (when auth is on)."),
    403: _error("The endpoint needs an admin API key."),
    409: _error("The request contradicts the task's state or reuses an Idempotency-Key."),
    413: _error("The upload is larger than TASKGATE_MAX_UPLOAD_BYTES."),
    422: _error("Invalid input; the message names the field."),
    429: _error("The owner's submit rate or in-flight limit is reached; retry after `Retry-After`."),
    503: _error("Redis or the broker did not answer within the deadline; retry after `Retry-After` "
                "seconds."),
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries for ``codes``."""
    return {code: ERRORS[code] for code in codes}


def json_errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``errors(*codes)`` for a route whose success is not JSON (Server-Sent Events): FastAPI
    would document its errors with the route's media type; they are JSON."""
    return {code: {"description": ERRORS[code]["description"], "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}} for code in codes}

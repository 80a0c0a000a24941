"""The JSON shapes the HTTP API answers with."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, JsonValue


class ErrorBody(BaseModel):
    """The stable error envelope: what went wrong, and whether trying again may help."""

    type: str = Field(description="Stable machine-readable error type.", examples=["task_not_found"])
    message: str = Field(description="What went wrong and what to do about it.")
    retryable: bool = Field(description="True when the same request may succeed later.")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer of taskgate."""

    error: ErrorBody


class TaskCreated(BaseModel):
    """A task was accepted and is queued."""

    task_id: str = Field(description="The id to ask about with GET /result/{task_id}.")


class TutorialResult(BaseModel):
    """The tutorial's result shape; `pending` covers queued, started and retrying."""

    status: Literal["pending", "completed", "failed", "cancelled"]
    result: JsonValue = Field(default=None, description="The task's return value, once completed.")
    error: ErrorBody | None = Field(default=None, description="Why the task failed, if it did.")


class Health(BaseModel):
    """The process answers; says nothing about Redis."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Whether the broker and the result backend answer within the deadline."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description='Each component: "ok" or the problem seen.')


#: OpenAPI entries for the errors the task endpoints can answer with.
TASK_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "No task with this id (never submitted, or expired)."},
    422: {"model": ErrorResponse, "description": "Invalid input; the message names the field."},
    503: {"model": ErrorResponse,
          "description": "Redis or the broker did not answer within the deadline; "
                         "retry after `Retry-After` seconds."},
}

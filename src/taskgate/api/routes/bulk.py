"""Bulk actions: cancel or replay many tasks (by id, or the caller's tasks a filter selects),
requeue or drop many dead letters. Each item is answered on its own."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...producer.bulk import MAX_BULK, Outcome, Selection
from ...states import TaskState
from ..deps import CallerDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import ErrorBody, errors

TaskIds = list[Annotated[str, Field(min_length=1, max_length=200)]]


class TaskFilter(BaseModel):
    """The caller's tasks to act on (newest first, at most 1,000)."""

    model_config = ConfigDict(extra="forbid")

    state: TaskState | None = None
    name: str | None = Field(default=None, max_length=200)
    since: datetime | None = Field(default=None, description="Submitted at or after (with a timezone).")
    until: datetime | None = Field(default=None, description="Submitted before (with a timezone).")


class BulkTasks(BaseModel):
    """Exactly one of `task_ids` (up to 1,000) or `filter`."""

    model_config = ConfigDict(extra="forbid")

    task_ids: TaskIds | None = Field(default=None, min_length=1, max_length=MAX_BULK)
    filter: TaskFilter | None = None

    @model_validator(mode="after")
    def _one_of(self) -> BulkTasks:
        if (self.task_ids is None) == (self.filter is None):
            raise ValueError("give either task_ids or filter")
        if self.filter is not None and not self.filter.model_dump(exclude_none=True):
            raise ValueError("filter: name at least one of state, name, since, until (an empty filter "
                             "would act on every task)")
        for when in (self.filter.since, self.filter.until) if self.filter else ():
            if when is not None and when.tzinfo is None:
                raise ValueError("filter times need a timezone, e.g. 2026-12-05T10:00:00Z")
        return self


class BulkIds(BaseModel):
    """Up to 1,000 dead letters' task ids."""

    model_config = ConfigDict(extra="forbid")

    task_ids: TaskIds = Field(min_length=1, max_length=MAX_BULK)


class BulkItem(BaseModel):
    """One item's outcome: `ok`, or the `error` that stopped it."""

    task_id: str
    ok: bool
    state: TaskState | None = Field(default=None, description="Its state after the action.")
    new_task_id: str | None = Field(default=None, description="Replay: the new task's id.")
    error: ErrorBody | None = None


class BulkResult(BaseModel):
    """One outcome per task acted on, in the order given (newest first for a filter)."""

    results: list[BulkItem]


def _answer(outcomes: list[Outcome]) -> BulkResult:
    return BulkResult(results=[BulkItem(
        task_id=outcome.task_id, ok=outcome.ok, state=outcome.state, new_task_id=outcome.new_task_id,
        error=ErrorBody(type=outcome.error[0], message=outcome.error[1], retryable=outcome.error[2])
        if outcome.error else None) for outcome in outcomes])


async def _ids(body: BulkTasks, producer: ProducerDep, caller: CallerDep) -> list[str]:
    if body.task_ids is not None:
        return body.task_ids
    assert body.filter is not None
    chosen = body.filter
    selection = Selection(chosen.state, chosen.name, chosen.since, chosen.until)
    return await producer.bulk.select(selection, caller)


async def cancel_tasks(
    body: BulkTasks, producer: ProducerDep, caller: CallerDep,
    terminate: Annotated[bool, Query(description="Also kill running tasks' processes.")] = False,
) -> BulkResult:
    """Each as `POST /tasks/{task_id}/cancel` would; a finished one is a `conflict` item."""
    return _answer(await producer.bulk.cancel(await _ids(body, producer, caller), terminate, caller))


async def replay_tasks(body: BulkTasks, producer: ProducerDep, caller: CallerDep) -> BulkResult:
    """Each as `POST /tasks/{task_id}/replay` would: a new task with the same arguments."""
    return _answer(await producer.bulk.replay(await _ids(body, producer, caller), caller))


async def requeue_dead_letters(body: BulkIds, producer: ProducerDep, caller: CallerDep) -> BulkResult:
    """Each as `POST /dead-letters/{task_id}/requeue` would."""
    return _answer(await producer.bulk.requeue(body.task_ids, caller))


async def drop_dead_letters(body: BulkIds, producer: ProducerDep, caller: CallerDep) -> BulkResult:
    """Each as `DELETE /dead-letters/{task_id}` would."""
    return _answer(await producer.bulk.drop(body.task_ids, caller))


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes (see ``api.router``); included before
    the submit routes, whose ``POST /tasks/{name}`` they would otherwise meet."""
    router = APIRouter(responses=errors(401, 422, 503), route_class=route_class)
    router.post("/tasks/cancel", tags=["tasks"], summary="Cancel many tasks")(cancel_tasks)
    router.post("/tasks/replay", tags=["tasks"], summary="Replay many tasks")(replay_tasks)
    router.post("/dead-letters/requeue", tags=["dead letters"], summary="Requeue many dead letters")(
        requeue_dead_letters)
    router.post("/dead-letters/drop", tags=["dead letters"], summary="Drop many dead letters")(
        drop_dead_letters)
    return router

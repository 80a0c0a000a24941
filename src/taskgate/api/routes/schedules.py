"""Schedules over HTTP: create, list, read, change, pause, resume, run now, delete. Owner-scoped
like tasks: another owner's schedule is a 404; an admin key sees every one."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ...exceptions import InvalidArguments, UnknownTask
from ...producer.schedules import ScheduleView
from ...records import TaskRecord
from ...records.schedules import ScheduleRecord
from ...states import TaskState
from ..deps import CallerDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import errors

ScheduleId = Annotated[str, Path(min_length=1, max_length=200, description="The schedule's id.")]


class ScheduleCreate(BaseModel):
    """A new schedule: the task and its arguments, and either `cron` or `every`."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="The task to run (a name from GET /tasks/catalogue).")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Its arguments, validated "
                                      "against the task's schema when the schedule is made.")
    cron: str | None = Field(default=None, description="A five-field cron expression, e.g. `*/5 * * * *`.",
                             examples=["*/5 * * * *"])
    every: float | None = Field(default=None, description="Or: fire every so many seconds (1 s to a "
                                "year), from when the schedule is made.")
    timezone: str = Field(default="UTC", description="The IANA time zone `cron` is read in, e.g. "
                          "`Europe/Berlin`.")
    name: str | None = Field(default=None, max_length=200, description="A name to show; without one, "
                             "the schedule is shown by its task and timing.")
    overlap: Literal["allow", "skip"] = Field(default="allow", description="`skip`: skip a tick while "
                                              "the previous run has not finished.")
    catchup: Literal["none", "one"] = Field(default="none", description="After no worker ran for a "
                                            "while: fire nothing missed (`none`) or once (`one`).")
    enabled: bool = Field(default=True, description="False: made paused.")


class ScheduleUpdate(BaseModel):
    """What to change; fields left out stay. The next tick is computed again from now."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = None
    every: float | None = None
    timezone: str | None = None
    arguments: dict[str, Any] | None = None
    name: str | None = Field(default=None, max_length=200)
    overlap: Literal["allow", "skip"] | None = None
    catchup: Literal["none", "one"] | None = None


class ScheduleRun(BaseModel):
    """One run of a schedule: an ordinary task."""

    task_id: str
    state: TaskState
    tick: datetime | None = Field(default=None, description="The tick it stands for (null for a run "
                                  "started by hand).")
    created_at: datetime | None = None


class ScheduleInfo(BaseModel):
    """A schedule: its definition and where it stands."""

    schedule_id: str
    name: str | None = None
    task: str | None = None
    arguments: dict[str, Any] = Field(default_factory=dict)
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    overlap: str = "allow"
    catchup: str = "none"
    enabled: bool = True
    owner: str | None = None
    declared: str | None = Field(default=None, description="The module declaring it in code "
                                 "(`@taskgate.task(schedule=...)`); null for one made over HTTP.")
    created_at: datetime | None = None
    updated_at: datetime | None = None
    next_run_at: datetime | None = Field(default=None, description="Its next tick (null while paused).")
    last_run_at: datetime | None = Field(default=None, description="When its last run was queued.")
    last_task_id: str | None = None
    missed: int = Field(default=0, description="Catch-ups that fired nothing (`catchup: none`).")
    skipped: int = Field(default=0, description="Ticks skipped by `overlap: skip`.")
    problem: str | None = Field(default=None, description="Why it fires nothing, if it does not "
                                "(its task is on no live worker, a quota refused its run).")
    recent_runs: list[ScheduleRun] | None = Field(default=None, description="Its latest runs, newest "
                                                  "first (GET /schedules/{id} only; GET "
                                                  "/tasks?schedule_id= lists them all).")

    @classmethod
    def of(cls, schedule: ScheduleRecord, runs: list[TaskRecord] | None = None) -> ScheduleInfo:
        fields = {name: getattr(schedule, name) for name in cls.model_fields if hasattr(schedule, name)}
        if not schedule.enabled:
            fields["next_run_at"] = None
        if not schedule.name:  # named by its task and timing, as they are now
            with contextlib.suppress(InvalidArguments):
                fields["name"] = f"{schedule.task} {schedule.timing().describe()}"
        recent = None if runs is None else [
            ScheduleRun(task_id=run.task_id, state=run.state or TaskState.QUEUED, tick=run.tick,
                        created_at=run.created_at) for run in runs]
        return cls(**fields, recent_runs=recent)


class SchedulePage(BaseModel):
    """One page of schedules, oldest first."""

    schedules: list[ScheduleInfo]
    next_cursor: str | None = None


class RunStarted(BaseModel):
    """A run queued by hand."""

    schedule_id: str
    task_id: str
    state: TaskState = TaskState.QUEUED


def _view(view: ScheduleView) -> ScheduleInfo:
    return ScheduleInfo.of(view.schedule, view.runs)


async def create_schedule(body: ScheduleCreate, producer: ProducerDep, caller: CallerDep,
                          request: Request, response: Response) -> ScheduleInfo:
    """Validates the timing and the arguments (a 422 names the field), then fires from the next
    tick on, on any worker, once per tick."""
    try:
        schedule = await producer.schedules.create(
            body.task, body.arguments, cron=body.cron, every=body.every, timezone=body.timezone,
            name=body.name, overlap=body.overlap, catchup=body.catchup, enabled=body.enabled, caller=caller)
    except UnknownTask as exc:
        raise InvalidArguments(f"task: {exc}") from None
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{schedule.schedule_id}"
    return ScheduleInfo.of(schedule)


async def list_schedules(
    producer: ProducerDep, caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,9}$",
                                        description="`next_cursor` of the previous page.")] = None,
) -> SchedulePage:
    """Yours (every one with an admin key), oldest first."""
    found, after = await producer.schedules.list(caller, limit, int(cursor) if cursor else 0)
    return SchedulePage(schedules=[ScheduleInfo.of(schedule) for schedule in found],
                        next_cursor=str(after) if after is not None else None)


async def get_schedule(schedule_id: ScheduleId, producer: ProducerDep, caller: CallerDep) -> ScheduleInfo:
    """The definition, `next_run_at`, `last_run_at` and the ids and states of its recent runs."""
    return _view(await producer.schedules.view(schedule_id, caller))


async def update_schedule(schedule_id: ScheduleId, body: ScheduleUpdate, producer: ProducerDep,
                          caller: CallerDep) -> ScheduleInfo:
    """Takes effect from the next tick on every worker. A schedule declared in code is a 409:
    change the declaration."""
    await producer.schedules.update(schedule_id, caller, **body.model_dump(exclude_none=True))
    return _view(await producer.schedules.view(schedule_id, caller))


async def pause_schedule(schedule_id: ScheduleId, producer: ProducerDep, caller: CallerDep) -> ScheduleInfo:
    """No tick fires until it is resumed; runs in progress go on."""
    await producer.schedules.pause(schedule_id, caller)
    return _view(await producer.schedules.view(schedule_id, caller))


async def resume_schedule(schedule_id: ScheduleId, producer: ProducerDep, caller: CallerDep) -> ScheduleInfo:
    """Fires again from the first tick after now (ticks passed while paused do not fire)."""
    await producer.schedules.resume(schedule_id, caller)
    return _view(await producer.schedules.view(schedule_id, caller))


async def run_schedule(schedule_id: ScheduleId, producer: ProducerDep, caller: CallerDep,
                       request: Request, response: Response) -> RunStarted:
    """Queues one run now, outside the schedule (its ticks stay as they are); follow it with
    GET /tasks/{task_id}."""
    task_id = await producer.schedules.run_now(schedule_id, caller)
    path = request.url.path  # under the router's prefix, wherever it is mounted
    response.headers["Location"] = f"{path[:path.rindex('/schedules/')]}/tasks/{task_id}"
    return RunStarted(schedule_id=schedule_id, task_id=task_id)


async def delete_schedule(schedule_id: ScheduleId, producer: ProducerDep, caller: CallerDep) -> None:
    """No tick fires after this; its runs stay, as tasks. A schedule declared in code is a 409:
    remove the declaration, or pause it."""
    await producer.schedules.delete(schedule_id, caller)


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(prefix="/schedules", tags=["schedules"], responses=errors(401),
                       route_class=route_class)
    router.post("", status_code=201, summary="Create a schedule",
                responses=errors(422, 429, 503))(create_schedule)
    router.get("", summary="List schedules", responses=errors(422, 503))(list_schedules)
    router.get("/{schedule_id}", summary="A schedule and its recent runs",
               responses=errors(404, 422, 503))(get_schedule)
    router.patch("/{schedule_id}", summary="Change a schedule",
                 responses=errors(404, 409, 422, 503))(update_schedule)
    router.post("/{schedule_id}/pause", summary="Pause a schedule",
                responses=errors(404, 422, 503))(pause_schedule)
    router.post("/{schedule_id}/resume", summary="Resume a paused schedule",
                responses=errors(404, 422, 503))(resume_schedule)
    router.post("/{schedule_id}/run", status_code=202, summary="Run a schedule's task now",
                responses=errors(404, 422, 429, 503))(run_schedule)
    router.delete("/{schedule_id}", status_code=204, summary="Delete a schedule",
                  responses=errors(404, 409, 422, 503))(delete_schedule)
    return router

"""Admission limits: every limited task's limits and keys in use, and runtime overrides (admin)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Path

from ...producer.limits import LimitsChange, TaskLimits
from ..deps import AdminDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import TaskLimitsInfo, errors

TaskName = Annotated[str, Path(min_length=1, max_length=200, description="The task's name in the catalogue.")]


def _info(limits: TaskLimits) -> TaskLimitsInfo:
    """The answer for one task; its override holds only the parts set (the routes leave unset
    fields out)."""
    data = dataclasses.asdict(limits)
    return TaskLimitsInfo.model_validate(data)


async def list_limits(producer: ProducerDep, _admin: AdminDep) -> list[TaskLimitsInfo]:
    """Every task with declared limits or a runtime override: the declared limits, the override,
    the limits in effect and where they come from, and per key in use its running and waiting
    runs and when its rate next admits one. Needs an admin key when auth is on."""
    return [_info(limits) for limits in await producer.limits.tasks()]


async def put_limits(task: TaskName, change: LimitsChange, producer: ProducerDep,
                     _admin: AdminDep) -> TaskLimitsInfo:
    """Overrides the task's declared limits, cluster-wide, until `DELETE /limits/{task}`: each field
    given replaces the declared one (null: no such limit), a field left out keeps the declared
    value; it replaces any earlier override. Runs already waiting are looked at again under the
    new limits within a worker keeper's pass. Needs an admin key when auth is on."""
    return _info(await producer.limits.put(task, change))


async def delete_limits(task: TaskName, producer: ProducerDep, _admin: AdminDep) -> None:
    """Removes the task's override: its declared limits apply again (to runs waiting too). 404
    when it has none. Needs an admin key when auth is on."""
    await producer.limits.delete(task)


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(prefix="/limits", tags=["limits"], responses=errors(401, 403), route_class=route_class)
    router.get("", summary="Admission limits of every limited task", response_model_exclude_unset=True,
               responses=errors(503))(list_limits)
    router.put("/{task}", summary="Override a task's limits at runtime", response_model_exclude_unset=True,
               responses=errors(404, 422, 503))(put_limits)
    router.delete("/{task}", status_code=204, summary="Remove a task's limits override",
                  responses=errors(404, 422, 503))(delete_limits)
    return router

"""Dead letters: tasks that exhausted their retries or deliveries, to inspect, requeue or drop."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from ..deps import CallerDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import DeadLetter, DeadLetterPage, TaskInfo, errors

TaskId = Annotated[str, Path(min_length=1, max_length=200, description="The dead task's id.")]


async def list_dead_letters(
    producer: ProducerDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^\d+(\.\d+)?$",
                                        description="`next_cursor` of the previous page.")] = None,
) -> DeadLetterPage:
    """Each with why it died, its attempts, its last error and its arguments."""
    records, after = await producer.reader.dead_letters(limit, float(cursor) if cursor else None, caller)
    letters = [DeadLetter.from_record(record, dead_at) for record, dead_at in records]
    return DeadLetterPage(dead_letters=letters,
                          next_cursor=repr(after) if after is not None else None)


async def requeue_dead_letter(task_id: TaskId, producer: ProducerDep, caller: CallerDep) -> TaskInfo:
    """Queues it again with the same id and arguments and fresh attempt counts; follow it with
    GET /tasks/{task_id}."""
    return TaskInfo.from_record(await producer.control.requeue(task_id, caller))


async def drop_dead_letter(task_id: TaskId, producer: ProducerDep, caller: CallerDep) -> None:
    """Removes it from the list; its record stays readable until it expires."""
    await producer.control.drop(task_id, caller)


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(prefix="/dead-letters", tags=["dead letters"], responses=errors(401),
                       route_class=route_class)
    router.get("", summary="List dead-lettered tasks, newest first",
               responses=errors(422, 503))(list_dead_letters)
    router.post("/{task_id}/requeue", summary="Run a dead-lettered task again",
                responses=errors(404, 422, 503))(requeue_dead_letter)
    router.delete("/{task_id}", status_code=204, summary="Drop a dead letter",
                  responses=errors(404, 422, 503))(drop_dead_letter)
    return router

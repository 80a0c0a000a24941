"""``GET /events``: the caller's tasks as they change, for live lists (the dashboard's)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from ...exceptions import BackendUnavailable
from ...states import TaskState
from ..deps import CallerDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import TaskInfo, json_errors


async def feed_slot(producer: ProducerDep) -> None:
    """503 (before the stream begins) when the process holds as many feeds as it may."""
    feed = producer.feed
    if len(feed.readers) >= feed.limit:
        raise BackendUnavailable("api", f"this API process holds {feed.limit} live feeds, the most it may "
                                 "(TASKGATE_MAX_STREAMS); retry later")


async def task_changes(
    producer: ProducerDep, caller: CallerDep, _slot: Annotated[None, Depends(feed_slot)],
    state: Annotated[TaskState | None, Query(description="Only tasks in this state.")] = None,
    name: Annotated[str | None, Query(max_length=200, description="Only tasks with this name.")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events, one `tasks` event per batch: a JSON list of the tasks (as
    `GET /tasks/{task_id}` shows them, without results' typing) that were submitted or changed
    since the last batch, yours only (every owner's with an admin key), filtered like `GET /tasks`.
    The first batch is empty: it comes once the stream is live (no later change is missed).
    Batches come at most 4 times a second, each task once with its latest state and at most 500
    tasks (the most recently changed); an empty batch every 15 s keeps the stream open. The
    stream ends if the API loses Redis's events: reconnect, as EventSource does by itself."""
    async for batch in producer.feed.stream(caller, state, name):
        yield ServerSentEvent(event="tasks", data=[TaskInfo.from_record(record).model_dump(mode="json")
                                                   for record in batch])


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """This route, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(tags=["tasks"], route_class=route_class)
    router.get("/events", response_class=EventSourceResponse, summary="Your tasks as they change (SSE)",
               responses=json_errors(401, 422, 503))(task_changes)
    return router

"""``GET /events``: the caller's tasks as they change, for live lists (the dashboard's)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from ...exceptions import TaskGateError
from ...records import TaskRecord
from ...states import TaskState
from ..deps import CallerDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import TaskInfo, json_errors

log = logging.getLogger("taskgate.api")


def task_json(record: TaskRecord) -> str:
    """A task as a batch lists it, in JSON as FastAPI writes an event's data (``json.dumps``'s
    defaults; a non-finite float as null). Made once per change per process (``FeedEntry.render``)
    and shared by every feed that shows it: a batch joins these, with no per-feed encoding."""
    task = TaskInfo.from_record(record).model_dump(mode="json", exclude={"timeline"})
    try:
        return json.dumps(task, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere in it: orjson writes null, as FastAPI does
        return json.dumps(orjson.loads(orjson.dumps(task)))


async def feed_slot(producer: ProducerDep, caller: CallerDep) -> None:
    """429 or 503 before the stream begins (see ``Feed.check``)."""
    producer.feed.check(caller)


async def task_changes(
    producer: ProducerDep, caller: CallerDep, _slot: Annotated[None, Depends(feed_slot)],
    state: Annotated[TaskState | None, Query(description="Only tasks in this state.")] = None,
    name: Annotated[str | None, Query(max_length=200, description="Only tasks with this name.")] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events, one `tasks` event per batch: a JSON list of the tasks (as
    `GET /tasks/{task_id}` shows them, without results' typing or `timeline`) that were submitted or changed
    since the last batch, yours only (every owner's with an admin key), filtered like `GET /tasks`.
    The first batch is empty: it comes once the stream is live (no later change is missed).
    Batches come at most 4 times a second, each task once with its latest state and at most 500
    tasks (the most recently changed); an empty batch every 15 s keeps the stream open. The
    stream ends if the API loses Redis's events: reconnect, as EventSource does by itself."""
    try:
        async for batch in producer.feed.stream(caller, state, name):
            # the JSON list, as json.dumps writes it, of the changes' JSON made once for every feed
            yield ServerSentEvent(event="tasks", raw_data="[" + ", ".join(
                change.render(task_json) for change in batch) + "]")
    except TaskGateError as exc:  # the answer has begun: the stream just ends (clients reconnect)
        log.warning("GET /events ended: %s", exc)


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """This route, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(tags=["tasks"], route_class=route_class)
    router.get("/events", response_class=EventSourceResponse, summary="Your tasks as they change (SSE)",
               responses=json_errors(401, 422, 429, 503))(task_changes)
    return router

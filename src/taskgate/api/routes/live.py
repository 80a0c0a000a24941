"""``GET /events``: the caller's tasks as they change, for live lists (the dashboard's)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from ...auth import Caller
from ...exceptions import TaskGateError
from ...producer.feed import Feed, FeedEntry
from ...records import TaskRecord
from ...states import TaskState
from ..deps import CallerDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import TaskInfo, json_errors

log = logging.getLogger("taskgate.api")


def task_json(record: TaskRecord) -> str:
    """A task as a batch lists it, in JSON as FastAPI writes an event's data (``json.dumps``'s
    defaults, so ASCII on one line; a non-finite float as null)."""
    task = TaskInfo.from_record(record).model_dump(mode="json", exclude={"timeline"})
    try:
        return json.dumps(task, allow_nan=False)
    except ValueError:  # a NaN or an infinity somewhere in it: orjson writes null, as FastAPI does
        return json.dumps(orjson.loads(orjson.dumps(task)))


def _task_bytes(record: TaskRecord) -> bytes:
    return task_json(record).encode()


def tasks_frame(batch: list[FeedEntry]) -> bytes:
    """One ``tasks`` event as the stream carries it: the batch's JSON list (as ``json.dumps``
    writes it) on its data line, byte for byte what FastAPI's SSE encoding wrote for it. Each
    change's JSON is made once per process (``FeedEntry.render``), and the feed makes a frame once
    per flush for every feed with the same view (``Feed.stream``)."""
    return b"event: tasks\ndata: [" + b", ".join(change.render(_task_bytes) for change in batch) + b"]\n\n"


class FrameStream(StreamingResponse):
    """A ``text/event-stream`` of frames encoded beforehand, written as they come (FastAPI's own
    SSE handling would copy, split and re-encode each frame per feed, with two memory streams and
    a timer around it). Starlette ends the response when the client disconnects; the frames'
    generator is closed then, so the feed's slot is released at once."""

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncGenerator[bytes], status_code: int = 200) -> None:
        super().__init__(frames, status_code, {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.frames = frames

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.frames.aclose()


async def feed_slot(producer: ProducerDep, caller: CallerDep) -> None:
    """429 or 503 before the stream begins (see ``Feed.check``)."""
    producer.feed.check(caller)


async def _frames(feed: Feed, caller: Caller, state: TaskState | None,
                  name: str | None) -> AsyncGenerator[bytes]:
    try:
        async with contextlib.aclosing(feed.stream(caller, tasks_frame, state, name)) as frames:
            async for frame in frames:
                yield frame
    except TaskGateError as exc:  # the answer has begun: the stream just ends (clients reconnect)
        log.warning("GET /events ended: %s", exc)


async def task_changes(
    producer: ProducerDep, caller: CallerDep, _slot: Annotated[None, Depends(feed_slot)],
    state: Annotated[TaskState | None, Query(description="Only tasks in this state.")] = None,
    name: Annotated[str | None, Query(max_length=200, description="Only tasks with this name.")] = None,
) -> FrameStream:
    """Server-Sent Events, one `tasks` event per batch: a JSON list of the tasks (as
    `GET /tasks/{task_id}` shows them, without results' typing or `timeline`) that were submitted or changed
    since the last batch, yours only (every owner's with an admin key), filtered like `GET /tasks`.
    The first batch is empty: it comes once the stream is live (no later change is missed).
    Batches come at most 4 times a second, each task once with its latest state and at most 500
    tasks (the most recently changed); an empty batch every 15 s keeps the stream open. The
    stream ends if the API loses Redis's events: reconnect, as EventSource does by itself."""
    return FrameStream(_frames(producer.feed, caller, state, name))


#: The 200 answer's OpenAPI entry, declared by hand: the endpoint returns its own response of frames
#: encoded beforehand, so FastAPI sees no generator of events to describe (its SSE routes' entry).
EVENTS_200: dict[str, Any] = {"description": "Successful Response", "content": {"text/event-stream": {
    "itemSchema": {"type": "object", "properties": {
        "data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0}}}}}}


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """This route, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(tags=["tasks"], route_class=route_class)
    router.get("/events", response_class=FrameStream, response_model=None,
               summary="Your tasks as they change (SSE)",
               responses={200: EVENTS_200, **json_errors(401, 422, 429, 503)})(task_changes)
    return router

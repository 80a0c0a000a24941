"""Tasks: one typed ``POST /tasks/{name}`` per declared task, and the lifecycle around it.

The submit routes are generated from the catalogue at startup: each one's body is the task's
generated argument model, and ``GET /tasks/{task_id}`` answers with a per-task model whose
``result`` has the task's declared return type, so /docs shows every input and output.
"""


import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import create_model

from ...exceptions import BackendUnavailable, UnknownTask
from ...files import file_arguments
from ...records import TaskRecord
from ...registry import RESERVED_NAMES, TaskSpec
from ...states import TaskState
from ..deps import CallerDep, ProducerDep
from ..errors import TaskgateRoute
from ..params import openapi_body
from ..schemas import (
    ERRORS,
    CatalogueEntry,
    ResultsPage,
    ResultsQuery,
    TaskAccepted,
    TaskInfo,
    TaskPage,
    TaskReplayed,
    errors,
    json_errors,
)
from .submit import (
    BATCH_ACCEPTED,
    BATCH_DESCRIPTION,
    BATCH_REFUSED,
    FILE_404,
    SUBMIT_PARAMETERS,
    batch_endpoint,
    submit_endpoint,
)

TaskId = Annotated[str, Path(min_length=1, max_length=200, description="The id a submit returned.")]

log = logging.getLogger("taskgate.api")

#: Longest ``?wait=`` a client may ask for, in seconds.
MAX_WAIT = 30.0

#: OpenAPI: the 429 and 503 of the routes that wait on tasks' events (``subscriptions``).
WAIT_429 = ("The owner holds its share of this API process's waits and event streams "
            "(TASKGATE_MAX_STREAMS_PER_OWNER); retry after `Retry-After`.")
WAIT_503 = ("Redis did not answer within the deadline, or this API process serves "
            "TASKGATE_MAX_STREAMS waits and event streams already (the message says which); retry "
            "after `Retry-After` seconds.")


def wait_errors(sse: bool = False) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of the 429 and 503 of a waiting route (``sse``: an event stream's)."""
    base = json_errors(429, 503) if sse else errors(429, 503)
    return {429: {**base[429], "description": WAIT_429}, 503: {**base[503], "description": WAIT_503}}


def moment(field: str, text: str | None) -> float | None:
    """A query parameter's ISO 8601 time with a timezone, as epoch seconds (422 otherwise: a bare
    number or a time without a zone is refused, not guessed)."""
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
        problem = None if when.tzinfo is not None else "give a timezone, e.g. 2026-12-05T10:00:00Z"
    except ValueError:
        problem = "not an ISO 8601 time, e.g. 2026-12-05T10:00:00Z"
    if problem is not None:
        raise RequestValidationError([{"type": "value_error", "loc": ("query", field), "input": text,
                                       "msg": problem}])
    return when.timestamp()


def info_models(catalogue: dict[str, TaskSpec]) -> dict[str, type[TaskInfo]]:
    """Per task, a TaskInfo subclass whose ``name`` and ``result`` are typed."""
    models: dict[str, type[TaskInfo]] = {}
    for name, spec in catalogue.items():
        title = "".join(part.capitalize() for part in name.split("_"))
        name_type: Any = Literal[name]
        models[name] = create_model(
            f"{title}Task", __base__=TaskInfo,
            __doc__=f"A `{name}` task; `result` is what it returns once `succeeded`.",
            name=(name_type, ...),
            result=(spec.result_type | None, None),
        )
    return models


def build_router(catalogue: dict[str, TaskSpec], route_class: type[TaskgateRoute]) -> APIRouter:
    """The /tasks routes for this catalogue, on a router of ``route_class`` routes."""
    router = APIRouter(prefix="/tasks", tags=["tasks"], responses=errors(401), route_class=route_class)
    models = info_models(catalogue)
    AnyTask: Any = Union[tuple(models.values()) + (TaskInfo,)] if models else TaskInfo  # noqa: UP007

    def info(record: TaskRecord) -> Any:
        return models.get(record.name or "", TaskInfo).from_record(record)

    @router.get("", summary="List submitted tasks, newest first", responses=errors(403, 404, 422, 503))
    async def list_tasks(
        producer: ProducerDep,
        caller: CallerDep,
        state: Annotated[TaskState | None, Query(description="Only tasks in this state.")] = None,
        name: Annotated[str | None, Query(description="Only tasks with this name.")] = None,
        schedule_id: Annotated[str | None, Query(min_length=1, max_length=200,
                                                 description="Only the runs of this schedule.")] = None,
        owner: Annotated[str | None, Query(min_length=1, max_length=200,
                                           description="Only this owner's tasks (`anonymous`: those "
                                           "submitted while auth was off). Another owner's: admins only "
                                           "(403).")] = None,
        since: Annotated[str | None, Query(description="Only tasks submitted at or after this time "
                                           "(ISO 8601 with a timezone).", max_length=64,
                                           json_schema_extra={"format": "date-time"})] = None,
        until: Annotated[str | None, Query(description="Only tasks submitted before this time "
                                           "(ISO 8601 with a timezone).", max_length=64,
                                           json_schema_extra={"format": "date-time"})] = None,
        limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
        cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.",
                                            pattern=r"^\d+(\.\d+)?$")] = None,
    ) -> TaskPage:
        """History from Redis, newest first; records expire with their results. `schedule_id`
        names a schedule of the caller's (404 otherwise). A page may hold fewer than `limit`
        tasks while `next_cursor` says more may follow: a rare filter stops after reading 20
        pages' worth of the history."""
        after, before = moment("since", since), moment("until", until)
        if schedule_id is not None:
            await producer.schedules.get(schedule_id, caller)
        records, after = await producer.reader.history(
            state=state, name=name, limit=limit, before=float(cursor) if cursor else None, caller=caller,
            schedule_id=schedule_id, owner=owner, since=after, until=before)
        return TaskPage(tasks=[info(record) for record in records],
                        next_cursor=repr(after) if after is not None else None)

    @router.get("/catalogue", summary="The tasks you can submit")
    async def get_catalogue(producer: ProducerDep, _caller: CallerDep) -> list[CatalogueEntry]:
        """Every task served here with the JSON schemas of its arguments and result (any valid
        key when auth is on: the catalogue says what can be run here)."""
        return [CatalogueEntry(name=spec.name, summary=spec.summary, queue=spec.queue,
                               arguments=spec.args_model.model_json_schema(),
                               result=spec.result_adapter.json_schema())
                for spec in producer.catalogue.values()]  # live: tasks declared since included

    @router.post("/results", summary="Results of many tasks, optionally waiting for them",
                 responses={**errors(422), **wait_errors()})
    async def get_results(query: ResultsQuery, producer: ProducerDep, caller: CallerDep) -> ResultsPage:
        """Up to 1,000 tasks in one call; with `wait`, held until all have ended (woken by the
        workers' events, not by polling) or `wait` seconds passed. A waiting call counts as one
        of the process's waits (429 over the owner's share, 503 when the process is full)."""
        records = await producer.reader.wait_many(query.task_ids, query.wait, caller)
        return ResultsPage(tasks=[info(record) if record else None for record in records])

    for spec in catalogue.values():
        router.add_api_route(
            f"/{spec.name}", submit_endpoint(spec), methods=["POST"], status_code=202,
            response_model=TaskAccepted, openapi_extra={
                "parameters": SUBMIT_PARAMETERS,
                "requestBody": openapi_body(spec.args_model, "The task's arguments.")},
            summary=spec.summary, description=spec.description or None,
            responses={**errors(409, 422, 429, 503), **(FILE_404 if file_arguments(spec.args_model) else {})},
            name=f"submit_{spec.name}",
        )
        router.add_api_route(
            f"/{spec.name}/batch", batch_endpoint(spec), methods=["POST"], status_code=202,
            summary=f"Submit many {spec.name} tasks at once",
            description=BATCH_DESCRIPTION, response_description=BATCH_ACCEPTED,
            responses={**errors(422, 503), 422: {**ERRORS[422], "description": BATCH_REFUSED}},
            name=f"submit_{spec.name}_batch",
        )

    @router.post("/{name}", include_in_schema=False)
    async def submit_unknown(name: str, request: Request, producer: ProducerDep) -> Any:
        if name in RESERVED_NAMES:  # an endpoint's path (GET /tasks/catalogue), not a task name
            raise HTTPException(405, "Method Not Allowed")
        late = producer.catalogue.get(name)  # declared after this router was built
        if late is None:
            raise UnknownTask(name)
        return await submit_endpoint(late)(request)

    @router.get("/{task_id}", summary="A task's state, result, error and progress",
                responses={**errors(404, 422), **wait_errors()})
    async def get_task(
        task_id: TaskId, producer: ProducerDep, caller: CallerDep,
        wait: Annotated[float, Query(ge=0, le=MAX_WAIT, description="Hold the request up to this "
                                     "many seconds until the task ends (no polling); a held "
                                     "request counts as one of the process's waits.")] = 0,
    ) -> AnyTask:
        reader = producer.reader
        record = await (reader.wait(task_id, wait, caller) if wait else reader.get(task_id, caller))
        return info(record)

    @router.post("/{task_id}/cancel", summary="Cancel a task", responses=errors(404, 409, 422, 503))
    async def cancel_task(
        task_id: TaskId, producer: ProducerDep, caller: CallerDep,
        terminate: Annotated[bool, Query(description="Also kill a running task's process "
                                         "instead of waiting for it to notice.")] = False,
    ) -> AnyTask:
        """A queued or retrying task is cancelled at once and never starts. A running one is
        asked to stop, and its `cancel_requested_at` says when: a task that checks
        (`raise_if_cancelled`, `cancel_requested`; an `async def` task at its next `await`;
        built-in tasks check often) ends `cancelled`; a sync task that never checks runs to its
        end and ends in its own state, `cancel_requested_at` still set, unless `terminate` kills
        it (`cancelled`). 409 once finished."""
        return info(await producer.control.cancel(task_id, terminate=terminate, caller=caller))

    @router.post("/{task_id}/replay", status_code=202, summary="Run a task again, as a new task",
                 responses=errors(404, 409, 422, 429, 503))
    async def replay_task(task_id: TaskId, producer: ProducerDep, caller: CallerDep,
                          request: Request, response: Response) -> TaskReplayed:
        """A new task with the same name and arguments (the task may be in any state), owned by
        the same owner; its record says `replay_of`. 409 when the task's arguments were not kept
        or no longer fit its signature."""
        submission = await producer.control.replay(task_id, caller)
        path = request.url.path
        response.headers["Location"] = f"{path[:path.rindex('/' + task_id)]}/{submission.task_id}"
        record = await producer.reader.get(submission.task_id, caller)
        return TaskReplayed(task_id=submission.task_id, name=record.name or "", replay_of=task_id)

    @router.delete("/{task_id}", status_code=204, summary="Forget a finished task",
                   responses=errors(404, 409, 503))
    async def delete_task(task_id: TaskId, producer: ProducerDep, caller: CallerDep) -> None:
        """Delete the record and result of a finished task; 409 while it may still run."""
        await producer.control.forget(task_id, caller)

    async def watched(task_id: TaskId, producer: ProducerDep,
                      caller: CallerDep) -> AsyncIterator[tuple[TaskRecord, Any]]:
        async with producer.reader.watch(task_id, caller) as watch:
            yield watch

    @router.get("/{task_id}/events", response_class=EventSourceResponse,
                summary="Live state and progress (Server-Sent Events)",
                responses={**json_errors(401, 404, 422), **wait_errors(sse=True)})
    async def task_events(
        task_id: TaskId, producer: ProducerDep,
        watch: Annotated[tuple[TaskRecord, Any], Depends(watched)],
        last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
    ) -> AsyncIterator[ServerSentEvent]:
        """One `state` or `progress` event per change, pushed by the workers, ending with the
        terminal state. Event ids are sequence numbers: reconnect with `Last-Event-ID`. An open
        stream counts as one of the process's waits. If the API loses Redis's events the stream
        ends early (no terminal state): reconnect, as EventSource does by itself."""
        record, subscription = watch
        seen = last_event_id or 0
        state = None
        while True:
            if record.seq > seen or (seen == 0 and state is None):
                seen = record.seq
                kind = "progress" if record.state == state else "state"
                state = record.state
                yield ServerSentEvent(data=info(record).model_dump(mode="json"), event=kind,
                                      id=str(seen))
            if record.ended:
                return
            try:
                changed = await producer.reader.next_change(task_id, subscription, timeout=60)
            except BackendUnavailable as exc:  # the 200 is sent: end, for the client to reconnect
                log.warning("GET /tasks/%s/events ended early: %s", task_id, exc)
                return
            if changed is not None and changed.newer_than(record):
                record = changed

    return router

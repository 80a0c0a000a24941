"""Tasks: one typed ``POST /tasks/{name}`` per declared task, and the lifecycle around it.

The submit routes are generated from the catalogue at startup: each one's body is the task's
generated argument model, and ``GET /tasks/{task_id}`` answers with a per-task model whose
``result`` has the task's declared return type, so /docs shows every input and output.
"""


import inspect
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ...auth import Caller
from ...exceptions import BackendUnavailable, UnknownTask
from ...files import file_arguments, owned_meta
from ...producer import Options, Producer, Submission
from ...records import TaskRecord
from ...registry import RESERVED_NAMES, TaskSpec
from ...states import TaskState
from ..deps import CallerDep, ProducerDep, get_caller, producer_of
from ..errors import validation_message
from ..params import header, openapi_body, openapi_parameters, parse_body, parse_query, strict_json
from ..schemas import (
    ERRORS,
    BatchAccepted,
    BatchOutcome,
    CatalogueEntry,
    ErrorBody,
    JSONBytes,
    ResultsPage,
    ResultsQuery,
    SubmitOptions,
    TaskAccepted,
    TaskInfo,
    TaskPage,
    errors,
    json_errors,
)
from .files import no_file

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


def build_router(catalogue: dict[str, TaskSpec]) -> APIRouter:
    """The /tasks routes for this catalogue."""
    router = APIRouter(prefix="/tasks", tags=["tasks"], responses=errors(401))
    models = info_models(catalogue)
    AnyTask: Any = Union[tuple(models.values()) + (TaskInfo,)] if models else TaskInfo  # noqa: UP007

    def info(record: TaskRecord) -> Any:
        return models.get(record.name or "", TaskInfo).from_record(record)

    @router.get("", summary="List submitted tasks, newest first", responses=errors(422, 503))
    async def list_tasks(
        producer: ProducerDep,
        caller: CallerDep,
        state: Annotated[TaskState | None, Query(description="Only tasks in this state.")] = None,
        name: Annotated[str | None, Query(description="Only tasks with this name.")] = None,
        limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
        cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.",
                                            pattern=r"^\d+(\.\d+)?$")] = None,
    ) -> TaskPage:
        """History from Redis, newest first; records expire with their results."""
        records, after = await producer.reader.history(state=state, name=name, limit=limit,
                                                       before=float(cursor) if cursor else None,
                                                       caller=caller)
        return TaskPage(tasks=[info(record) for record in records],
                        next_cursor=repr(after) if after is not None else None)

    @router.get("/catalogue", summary="The tasks you can submit")
    async def get_catalogue(_caller: CallerDep) -> list[CatalogueEntry]:
        """Every declared task with the JSON schemas of its arguments and result (any valid key
        when auth is on: the catalogue says what can be run here)."""
        return [CatalogueEntry(name=spec.name, summary=spec.summary, queue=spec.queue,
                               arguments=spec.args_model.model_json_schema(),
                               result=spec.result_adapter.json_schema())
                for spec in catalogue.values()]

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
    async def submit_unknown(name: str) -> None:
        if name in RESERVED_NAMES:  # an endpoint's path (GET /tasks/catalogue), not a task name
            raise HTTPException(405, "Method Not Allowed")
        raise UnknownTask(name)

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
        """A queued or retrying task is cancelled at once and never starts; a running one is
        asked to stop (built-in tasks check often) and ends `cancelled`; 409 once finished."""
        return info(await producer.control.cancel(task_id, terminate=terminate, caller=caller))

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


#: Most items in one batch submit.
MAX_BATCH = 1000

#: OpenAPI for the batch routes: what is answered per item, and when the request is refused whole.
BATCH_DESCRIPTION = (
    "Up to 1,000 argument objects; the valid ones are queued in one Redis round trip. Each item is "
    "judged on its own: an invalid one (a bad or missing field, not an object) gets its validation "
    "error in its place and does not refuse the others. 202 when at least one item is valid, with "
    "one outcome per item, in order: its `task_id`, or its `error` (`invalid_request`, naming each "
    "bad field as `items.<index>.<field>` like any 422; `file_not_found`, an argument naming an upload that "
    "does not exist or is another owner's; `quota_exceeded`, retryable). 422 when the "
    "request is malformed (not `{\"items\": [...]}`, empty, over 1,000 items) or no item is valid: "
    "nothing was queued, so the answer is an error, not a 202 that a client checking only the "
    "status would take for accepted work; its message names every bad field.")
#: OpenAPI for the 404 of a submit route whose task takes an uploaded file.
FILE_404: dict[int | str, dict[str, Any]] = {404: {
    **ERRORS[404], "description": "An argument names an uploaded file that does not exist or that "
    "another owner uploaded (`not_found`, naming the file id). Nothing was queued."}}
BATCH_ACCEPTED = "At least one item was valid: one outcome per item, in order."
BATCH_REFUSED = ("Nothing was queued: the request is malformed, or no item is valid; the message "
                 "names each bad field as `items.<index>.<field>`.")


def _items_are_arguments(schema: dict[str, Any]) -> None:
    """Document batch items as the task's arguments: the ``Any`` that lets an invalid item be
    answered in its place is how it is read, not what a client should send."""
    items = schema["properties"]["items"]["items"]
    branches = [branch for branch in items.pop("anyOf", []) if branch]
    items.update(branches[0] if len(branches) == 1 else {"anyOf": branches})


def batch_endpoint(spec: TaskSpec) -> Any:
    """The ``POST /tasks/{name}/batch`` handler of one task.

    The body is validated in one Pydantic call, each item against the task's arguments first
    and, failing that, as any JSON value, so an invalid item does not refuse the batch: it is
    validated again on its own for its errors, answered in its place. Only the valid items are
    submitted."""
    item = Annotated[Union[spec.args_model, Any],  # type: ignore[name-defined]  # noqa: UP007
                     Field(union_mode="left_to_right")]
    batch_model = create_model(
        f"{spec.args_model.__name__.removesuffix('Args')}Batch",
        __config__=ConfigDict(extra="forbid", json_schema_extra=_items_are_arguments),
        items=(list[item], Field(
            min_length=1, max_length=MAX_BATCH,
            description=f"The arguments of each task ({spec.args_model.__name__}). An item that is "
            "not valid is answered in its place with its error; the others are still queued.")),
    )

    files = file_arguments(spec.args_model)

    async def endpoint(request: Request, producer: Producer, caller: Caller,
                       batch: BaseModel) -> BatchAccepted:
        # FastAPI parsed the body with Python's lax rules (it found no malformed request); the
        # items are judged again by JSON's own types, as single submits are (no true for 1).
        batch = strict_json(batch_model, await request.body())
        items: list[Any] = batch.items  # type: ignore[attr-defined]
        refused: dict[int, list[dict[str, Any]]] = {}
        for index, given in enumerate(items):
            if not isinstance(given, spec.args_model):
                try:  # once more on its own, for its errors (json keeps NaN as NaN)
                    if not isinstance(given, dict):
                        spec.args_model.model_validate(given, strict=True)  # "a valid dictionary"
                    items[index] = strict_json(spec.args_model, json.dumps(given).encode(),
                                               ("body", "items", index))
                except ValidationError as exc:
                    refused[index] = [{**error, "loc": ("body", "items", index, *error["loc"])}
                                      for error in exc.errors(include_url=False)]
                except RequestValidationError as exc:
                    refused[index] = list(exc.errors())
        unowned: dict[int, str] = {}
        for index in range(len(items)) if files else ():
            if index not in refused:
                missing = await missing_file(producer, items[index], files, caller)
                if missing is not None:
                    unowned[index] = missing[1]
                    refused[index] = [{"loc": ("body", "items", index, missing[0]),
                                       "msg": no_file(missing[1]), "type": "file_not_found"}]
        valid = [index for index in range(len(items)) if index not in refused]
        if not valid:  # nothing to queue: the usual 422, naming every item's bad fields
            raise RequestValidationError([error for found in refused.values() for error in found])
        submitted = await producer.submitter.submit_many(spec, [items[index] for index in valid],
                                                         caller=caller)
        outcomes = {index: BatchOutcome(error=ErrorBody(type="invalid_request", retryable=False,
                                                        message=validation_message(found)))
                    for index, found in refused.items()}
        for index, file_id in unowned.items():
            outcomes[index] = BatchOutcome(error=ErrorBody(type="file_not_found", retryable=False,
                                                           message=no_file(file_id)))
        for index, result in zip(valid, submitted, strict=True):
            outcomes[index] = (
                BatchOutcome(task_id=result.task_id) if isinstance(result, Submission)
                else BatchOutcome(error=ErrorBody(type="quota_exceeded", message=str(result),
                                                  retryable=True)))
        return BatchAccepted(tasks=[outcomes[index] for index in range(len(items))])

    endpoint.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
        inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request),
        inspect.Parameter("producer", inspect.Parameter.KEYWORD_ONLY, annotation=ProducerDep),
        inspect.Parameter("caller", inspect.Parameter.KEYWORD_ONLY, annotation=CallerDep),
        inspect.Parameter("batch", inspect.Parameter.KEYWORD_ONLY, annotation=batch_model),
    ], return_annotation=BatchAccepted)
    endpoint.__name__ = f"submit_{spec.name}_batch"
    return endpoint


def submit_endpoint(spec: TaskSpec) -> Any:
    """The ``POST /tasks/{name}`` handler of one task, typed with its argument model. Its body,
    query parameters and Idempotency-Key header are read by hand (see ``params``)."""

    files = file_arguments(spec.args_model)

    async def endpoint(request: Request) -> JSONBytes:
        caller = await get_caller(request)  # 401 before any 422
        arguments = await parse_body(spec.args_model, request)
        options = (parse_query(SubmitOptions, request) if request.scope["query_string"]
                   else SubmitOptions())
        idempotency = header(request, "Idempotency-Key", max_length=MAX_IDEMPOTENCY_KEY)
        producer = producer_of(request)
        if files:
            missing = await missing_file(producer, arguments, files, caller)
            if missing is not None:
                raise HTTPException(404, no_file(missing[1]))
        submission = await producer.submitter.submit(
            spec, arguments, Options(countdown=options.countdown, eta=options.eta, priority=options.priority),
            idempotency, caller)
        if request.app.state.log_submits:
            log.info("accepted %s for %s", spec.name, caller.owner,
                     extra={"task_id": submission.task_id, "task_name": spec.name})
        headers = {"Location": f"/tasks/{submission.task_id}"}
        if submission.replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONBytes({"task_id": submission.task_id, "name": spec.name, "state": "queued"},
                         status_code=202, headers=headers)

    endpoint.__name__ = f"submit_{spec.name}"
    endpoint.__doc__ = spec.summary
    return endpoint


async def missing_file(producer: Producer, arguments: BaseModel, fields: tuple[str, ...],
                       caller: Caller) -> tuple[str, str] | None:
    """``(field, file id)`` of the first file among ``fields`` of ``arguments`` that is unknown
    or not ``caller``'s (uploads belong to their uploader; admins may use any)."""
    for name in fields:
        file_id = getattr(arguments, name)
        if await owned_meta(producer.settings.data_dir, file_id, caller) is None:
            return name, str(file_id)
    return None


#: Longest Idempotency-Key accepted.
MAX_IDEMPOTENCY_KEY = 200

#: OpenAPI for what the submit routes read by hand.
SUBMIT_PARAMETERS = [*openapi_parameters(SubmitOptions), {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
    "description": "Same key and body within 24 h return the same task (with `Idempotent-Replayed: "
    "true`); same key with another body is a 409."}]

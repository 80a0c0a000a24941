"""The submit routes of one task: ``POST /tasks/{name}`` and ``POST /tasks/{name}/batch``, built
per declared task (its body is the task's generated argument model). They read their query and
body by hand, with one Pydantic call each, for speed; their OpenAPI is declared to match."""


import inspect
import json
import logging
import time
from typing import Annotated, Any, Union

from fastapi import HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ... import validation
from ...auth import Caller
from ...exceptions import FieldError, InvalidArguments
from ...files import file_arguments, owned_meta
from ...producer import Options, Producer, Submission
from ...producer.bulk import error_type
from ...registry import TaskSpec
from ..deps import CallerDep, ProducerDep, gate_of, get_caller
from ..errors import direct
from ..params import openapi_parameters, parse_body, strict_json
from ..schemas import (
    ERRORS,
    BatchAccepted,
    BatchOutcome,
    ErrorBody,
    JSONBytes,
)
from .files import no_file

log = logging.getLogger("taskgate.api")


#: Most items in one batch submit.
MAX_BATCH = 1000

#: OpenAPI for the batch routes: what is answered per item, and when the request is refused whole.
BATCH_DESCRIPTION = (
    "Up to 1,000 argument objects; the valid ones are queued in one Redis round trip. Each item is "
    "judged on its own: an invalid one (a bad or missing field, not an object) gets its validation "
    "error in its place and does not refuse the others. 202 when at least one item is valid, with "
    "one outcome per item, in order: its `task_id`, or its `error` (`invalid_request`, naming each "
    "bad field as `items.<index>.<field>` like any 422; `file_not_found`, an argument naming an upload that "
    "does not exist or is another owner's; `quota_exceeded`, retryable; `backend_unavailable`, "
    "retryable: the item reached Redis past the deadline and was not queued). 422 when the "
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
        refused: dict[int, list[FieldError]] = {}
        for index, given in enumerate(items):
            if not isinstance(given, spec.args_model):
                at = ("body", "items", index)
                try:  # once more on its own, for its errors (json keeps NaN as NaN)
                    if not isinstance(given, dict):
                        spec.args_model.model_validate(given, strict=True)  # "a valid dictionary"
                    items[index] = validation.arguments_json(spec.args_model, json.dumps(given), at)
                except ValidationError as exc:
                    refused[index] = validation.field_errors(exc.errors(include_url=False), at)
                except InvalidArguments as exc:
                    refused[index] = exc.errors
        unowned: dict[int, str] = {}
        for index in range(len(items)) if files else ():
            if index not in refused:
                missing = await missing_file(producer, items[index], files, caller)
                if missing is not None:
                    unowned[index] = missing[1]
                    refused[index] = [FieldError(("body", "items", index, missing[0]), no_file(missing[1]),
                                                 "file_not_found")]
        valid = [index for index in range(len(items)) if index not in refused]
        if not valid:  # nothing to queue: the usual 422, naming every item's bad fields
            raise validation.refusal([error for found in refused.values() for error in found])
        submitted = await producer.submitter.submit_many(spec, [items[index] for index in valid],
                                                         caller=caller)
        outcomes = {index: BatchOutcome(error=ErrorBody(type="invalid_request", retryable=False,
                                                        message=validation.describe(found)))
                    for index, found in refused.items()}
        for index, file_id in unowned.items():
            outcomes[index] = BatchOutcome(error=ErrorBody(type="file_not_found", retryable=False,
                                                           message=no_file(file_id)))
        for index, result in zip(valid, submitted, strict=True):
            if isinstance(result, Submission):
                outcomes[index] = BatchOutcome(task_id=result.task_id)
                continue
            kind, retryable = error_type(result)  # a quota, or Redis past the deadline
            outcomes[index] = BatchOutcome(error=ErrorBody(type=kind, message=str(result),
                                                           retryable=retryable))
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

    @direct
    async def endpoint(request: Request) -> JSONBytes:
        caller = await get_caller(request)  # 401 before any 422
        arguments = await parse_body(spec.args_model, request)
        query = request.query_params  # read as text (lax), judged by the same rules as Python's
        options = (validation.options({name: query[name] for name in OPTION_NAMES if name in query},
                                      ("query",), strict=False)
                   if request.scope["query_string"] else validation.NO_OPTIONS)
        idempotency = validation.idempotency_key(request.headers.get("Idempotency-Key"),
                                                 ("header", "Idempotency-Key"))
        gate = gate_of(request)
        producer = gate.producer
        if files:
            missing = await missing_file(producer, arguments, files, caller)
            if missing is not None:
                raise HTTPException(404, no_file(missing[1]))
        expires_at = None if options.expires is None else time.time() + options.expires
        submission = await producer.submitter.submit(
            spec, arguments, Options(countdown=options.countdown, eta=options.eta, priority=options.priority,
                                     expires_at=expires_at),
            idempotency, caller)
        if gate.log_submits:
            log.info("accepted %s for %s", spec.name, caller.owner,
                     extra={"task_id": submission.task_id, "task_name": spec.name,
                            "trace_ids": submission.trace_ids})
        # Beside this route's own path, so a router mounted under a prefix points under it too.
        headers = {"Location": f"{request.scope['path'].rsplit('/', 1)[0]}/{submission.task_id}"}
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
MAX_IDEMPOTENCY_KEY = validation.MAX_IDEMPOTENCY_KEY
#: The submit options a query string may give.
OPTION_NAMES = tuple(validation.SubmitParameters.model_fields)

#: OpenAPI for what the submit routes read by hand.
SUBMIT_PARAMETERS = [*openapi_parameters(validation.SubmitParameters), {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
    "description": "Same key and body within 24 h return the same task (with `Idempotent-Replayed: "
    "true`); same key with another body is a 409."}]

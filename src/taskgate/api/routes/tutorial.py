"""The tutorial's two endpoints, done truthfully: ``GET /add`` and ``GET /result/{task_id}``."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field, ValidationError

from ...constants import INT64_MAX, INT64_MIN
from ...exceptions import InvalidArguments
from ...states import TaskState
from ..deps import CallerDep, ProducerDep, gate_of, get_caller
from ..errors import TaskgateRoute, direct, validation_message
from ..params import openapi_parameters, parse_query
from ..schemas import ErrorBody, JSONBytes, TaskCreated, TutorialResult, errors

log = logging.getLogger("taskgate.api")



class AddQuery(BaseModel):
    """The query of ``GET /add`` (read by hand: see ``params``)."""

    x: int = Field(ge=INT64_MIN, le=INT64_MAX, description="A signed 64-bit integer.")
    y: int = Field(ge=INT64_MIN, le=INT64_MAX, description="A signed 64-bit integer.")


TaskId = Annotated[str, Path(min_length=1, max_length=200, description="The id /add returned.")]

#: taskgate state -> the tutorial's status word.
_TUTORIAL_STATUS = {
    TaskState.QUEUED: "pending",
    TaskState.STARTED: "pending",
    TaskState.RETRYING: "pending",
    TaskState.SUCCEEDED: "completed",
    TaskState.FAILED: "failed",
    TaskState.CANCELLED: "cancelled",
    TaskState.EXPIRED: "expired",
}


@direct
async def submit_add(request: Request) -> JSONBytes:
    """Queue `add(x, y)` on a worker and return its task id at once."""
    caller = await get_caller(request)  # 401 before any 422
    query = parse_query(AddQuery, request)
    gate = gate_of(request)
    producer = gate.producer
    spec = producer.spec("add")  # the built-in add, or a task of yours named add that replaces it
    try:
        arguments = spec.args_model.model_validate({"x": query.x, "y": query.y})
    except ValidationError as exc:
        raise InvalidArguments(f"GET /add submits the task named add, which here is "
                               f"{spec.func.__module__}.{spec.func.__qualname__} and does not take the "
                               f"integers x and y: {validation_message(exc.errors())}") from None
    submission = await producer.submitter.submit(spec, arguments, caller=caller)
    if gate.log_submits:
        log.info("accepted add for %s", caller.owner,
                 extra={"task_id": submission.task_id, "task_name": "add",
                        "trace_ids": submission.trace_ids})
    return JSONBytes({"task_id": submission.task_id})


async def get_result(task_id: TaskId, producer: ProducerDep, caller: CallerDep) -> TutorialResult:
    """`completed` with the result, `failed` with the error, `pending` until then (`cancelled`,
    or `expired` with why when it was not started before its expiry); 404 if unknown."""
    record = await producer.reader.get(task_id, caller)
    state = record.state or TaskState.QUEUED  # an unreadable state: not known to have ended
    if state is TaskState.SUCCEEDED:
        return TutorialResult(status="completed", result=record.result)
    if state in (TaskState.FAILED, TaskState.EXPIRED):
        return TutorialResult(status=_TUTORIAL_STATUS[state],  # type: ignore[arg-type]
                              error=ErrorBody.from_stored(record.error))
    return TutorialResult(status=_TUTORIAL_STATUS[state])  # type: ignore[arg-type]


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(tags=["tutorial"], responses=errors(401, 422, 429, 503), route_class=route_class)
    # A GET that queues a task: guarded like a POST (no other site's page, a session's CSRF token)
    changing = type("ChangingRoute", (route_class,), {"changes_state": True})
    router.add_api_route("/add", submit_add, methods=["GET"], summary="Queue the tutorial's add(x, y)",
                         response_model=TaskCreated, route_class_override=changing,
                         description="Queue `add(x, y)` on a worker and return its task id at once. It "
                         "changes something, so, like a POST, it is refused (403) when another site's "
                         "page asks for it, and a dashboard session's request must carry its "
                         "`X-CSRF-Token`.", responses=errors(403),
                         openapi_extra={"parameters": openapi_parameters(AddQuery)})
    router.get("/result/{task_id}", summary="How a task went", response_model_exclude_unset=True,
               responses=errors(404))(get_result)
    return router

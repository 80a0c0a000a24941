"""Workflows over HTTP: submit a graph of tasks, read how it goes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from pydantic import BaseModel, Field

from ...exceptions import BackendUnavailable, TaskNotFound
from ...producer.subscriptions import Subscription
from ...producer.workflow_view import WorkflowView, view_of
from ...records.workflows import WorkflowRecord, WorkflowState
from ...workflow.spec import WorkflowSpec
from ..deps import CallerDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import errors, json_errors
from .tasks import wait_errors

WorkflowId = Annotated[str, Path(min_length=1, max_length=200, description="The id a submit returned.")]

log = logging.getLogger("taskgate.api")


class WorkflowCreated(BaseModel):
    """A workflow was recorded and its first nodes queued."""

    workflow_id: str = Field(description="Follow it with GET /workflows/{workflow_id}.")
    tasks: dict[str, str] = Field(description="Each node's task id (GET /tasks/{task_id}); a map node's "
                                  "runs are `<id>-<i>`, one per item, i from 0.")


class WorkflowSummary(BaseModel):
    """A workflow without its nodes (GET /workflows/{workflow_id} has them)."""

    workflow_id: str
    name: str
    state: WorkflowState
    owner: str | None = Field(default=None, description="Null for one submitted while auth was off.")
    created_at: datetime | None = None
    finished_at: datetime | None = Field(default=None, description="When its last node ended.")
    nodes: int = Field(description="Nodes in the graph.")
    left: int = Field(description="Nodes not ended yet.")
    failed: int = Field(description="Nodes that failed or were cancelled.")


class WorkflowPage(BaseModel):
    """One page of workflows, newest first."""

    workflows: list[WorkflowSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")


async def submit_workflow(spec: WorkflowSpec, request: Request, response: Response, producer: ProducerDep,
                          caller: CallerDep) -> WorkflowCreated:
    """Validates the whole graph first (tasks, arguments, references and their types, no cycle):
    a 422 names the node, and nothing is queued. Then records every node, each as an ordinary
    task run (retries, time limits, cancel), and queues the nodes without parents; each other
    node is queued by the step that ends its last parent, exactly once."""
    submitted = await producer.workflows.submit(spec, caller)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{submitted.workflow_id}"
    return WorkflowCreated(workflow_id=submitted.workflow_id, tasks=submitted.tasks)


async def get_workflow(workflow_id: WorkflowId, producer: ProducerDep, caller: CallerDep) -> WorkflowView:
    """Its state, its result once it succeeded, and every node's state and run."""
    return await view_of(producer.workflows, await producer.workflows.get(workflow_id, caller))


async def cancel_workflow(workflow_id: WorkflowId, producer: ProducerDep, caller: CallerDep) -> WorkflowView:
    """Nothing more starts: every node still waiting is skipped, and each run already queued is
    cancelled at once, each running one asked to stop (as `POST /tasks/{task_id}/cancel`). 409
    once it has ended."""
    return await view_of(producer.workflows, await producer.workflows.cancel(workflow_id, caller))


async def retry_workflow(workflow_id: WorkflowId, request: Request, response: Response, producer: ProducerDep,
                         caller: CallerDep) -> WorkflowCreated:
    """Runs the nodes that did not succeed (failed, cancelled, skipped) again, each as a new
    task run, with the results of those that succeeded; the graph is validated again first. 409
    while it runs or once it succeeded. `tasks`: the new runs' ids by node."""
    submitted = await producer.workflows.retry(workflow_id, caller)
    response.headers["Location"] = request.url.path.removesuffix("/retry")
    return WorkflowCreated(workflow_id=workflow_id, tasks=submitted.tasks)


async def list_workflows(
    producer: ProducerDep,
    caller: CallerDep,
    state: Annotated[WorkflowState | None, Query(description="Only workflows in this state.")] = None,
    name: Annotated[str | None, Query(max_length=200, description="Only workflows with this name.")] = None,
    owner: Annotated[str | None, Query(min_length=1, max_length=200,
                                       description="Only this owner's workflows (`anonymous`: those "
                                       "submitted while auth was off). Another owner's: admins only "
                                       "(403).")] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.",
                                        pattern=r"^\d+(\.\d+)?$")] = None,
) -> WorkflowPage:
    """Your workflows (an admin key: everyone's), newest first, as summaries; they expire with
    their nodes' records. A page may hold fewer than `limit` workflows while `next_cursor` says
    more may follow: a rare filter stops after reading 20 pages' worth of the history."""
    found, after = await producer.workflows.history(
        caller, state=state, name=name, owner=owner, limit=limit, before=float(cursor) if cursor else None)
    return WorkflowPage(workflows=[WorkflowSummary(
        workflow_id=s.workflow_id, name=s.name, state=s.state, owner=s.owner, created_at=s.created_at,
        finished_at=s.finished_at, nodes=s.nodes, left=s.left, failed=s.failed) for s in found],
        next_cursor=repr(after) if after is not None else None)


async def watched(workflow_id: WorkflowId, producer: ProducerDep,
                  caller: CallerDep) -> AsyncIterator[tuple[WorkflowRecord, Subscription]]:
    async with producer.workflows.watch(workflow_id, caller) as watch:
        yield watch


async def workflow_events(
    workflow_id: WorkflowId, producer: ProducerDep, caller: CallerDep,
    watch: Annotated[tuple[WorkflowRecord, Subscription], Depends(watched)],
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0)] = None,
) -> AsyncIterator[ServerSentEvent]:
    """A `workflow` event whose data is the workflow as `GET /workflows/{workflow_id}` shows it:
    one at once, then one after each change of a node (changes that come together may share
    one event), ending after the one with `finished_at` set. Event ids are the workflow's
    change numbers: reconnect with `Last-Event-ID` for nothing already seen (none at once when
    it is the latest). An open stream counts as one of the process's waits. If the API loses
    Redis's events the stream ends early (not finished): reconnect, as EventSource does."""
    workflow, subscription = watch
    seen = last_event_id
    try:
        while True:
            if seen is None or workflow.seq > seen:
                seen = workflow.seq
                view = await view_of(producer.workflows, workflow)
                yield ServerSentEvent(data=view.model_dump(mode="json"), event="workflow", id=str(seen))
            if workflow.finished_at is not None:
                return
            changed = await producer.workflows.next_change(workflow_id, subscription, timeout=60)
            if changed is not None and changed > seen:
                workflow = await producer.workflows.get(workflow_id, caller)
    except (BackendUnavailable, TaskNotFound) as exc:  # the 200 is sent: end, for the client to reconnect
        log.warning("GET /workflows/%s/events ended early: %s", workflow_id, exc)


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(prefix="/workflows", tags=["workflows"], responses=errors(401),
                       route_class=route_class)
    router.post("", status_code=202, summary="Run a workflow: a graph of tasks",
                responses=errors(422, 503))(submit_workflow)
    router.get("", summary="List workflows, newest first", responses=errors(403, 422, 503))(list_workflows)
    router.get("/{workflow_id}", summary="A workflow and its nodes",
               responses=errors(404, 422, 503))(get_workflow)
    router.post("/{workflow_id}/cancel", summary="Cancel a workflow",
                responses=errors(404, 409, 422, 503))(cancel_workflow)
    router.post("/{workflow_id}/retry", status_code=202,
                summary="Run a workflow's failed and skipped nodes again",
                responses=errors(404, 409, 422, 503))(retry_workflow)
    router.get("/{workflow_id}/events", response_class=EventSourceResponse,
               summary="A workflow as it changes (Server-Sent Events)",
               responses={**json_errors(401, 404, 422), **wait_errors(sse=True)})(workflow_events)
    return router

"""A workflow as the API and the library show it: its state, its result once it succeeded, and
each node's state and run (:func:`view_of`, one Redis round trip for the task nodes' runs)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, Field

from ..records.model import to_time
from ..records.workflows import NodeState, WorkflowRecord, WorkflowState

if TYPE_CHECKING:
    from .workflows import Workflows


class MapItems(BaseModel):
    """A map node's runs."""

    total: int = Field(description="Runs it fanned out to, one per item of its list.")
    left: int = Field(description="Runs not ended yet.")
    succeeded: int


class NodeView(BaseModel):
    """One node of a workflow."""

    task: str = Field(description="The task it runs.")
    map: bool = Field(default=False, description="A map node: one run per item of a list (see `items`).")
    state: NodeState = Field(description="`waiting` for its parents, `released` (its run is queued or "
                             "running: see `run_state`), or how it ended; `skipped`: it will never run "
                             "(a node it depends on failed, or the workflow stopped or was cancelled).")
    task_id: str = Field(description="Its run's task id (a map node: the base of its runs' ids, `<id>-<i>`).")
    run_state: str | None = Field(default=None, description="Its run's state (`GET /tasks/{task_id}`); "
                                  "null for a map node.")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    items: MapItems | None = Field(default=None, description="A map node's runs, once it fanned out.")
    error: str | None = Field(default=None, description="Why a map node failed without running "
                              "(the value it maps over is not a list, or too long).")
    parents: list[str] = Field(default_factory=list, description="Nodes it waits for (set at submit).")


class WorkflowView(BaseModel):
    """A workflow and every node's state."""

    workflow_id: str
    name: str
    state: WorkflowState = Field(description="`running` until every node ended; `failed` at once when "
                                 "a node fails with `on_failure` `stop` (running nodes still finish).")
    on_failure: Literal["stop", "continue"]
    owner: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = Field(default=None, description="When its last node ended.")
    result: Any = Field(default=None, description="Its only sink node's result, once it succeeded.")
    nodes: dict[str, NodeView]


def _time(value: str | None) -> datetime | None:
    try:
        return to_time(value) if value else None
    except (ValueError, OverflowError, OSError):
        return None


async def view_of(workflows: Workflows, workflow: WorkflowRecord) -> WorkflowView:
    """The workflow with its runs' states (one Redis round trip for every task node's run)."""
    runs = await workflows.runs(workflow, ("state", "started_at", "finished_at", "result"))
    nodes: dict[str, NodeView] = {}
    parents: dict[str, list[str]] = {name: [] for name in workflow.order}
    for node in workflow.nodes.values():
        for child in node.children:
            parents.setdefault(child, []).append(node.node)
    result = None
    for name, node in workflow.nodes.items():
        state, started, finished, stored = runs.get(name, [None, None, None, None])
        items = (MapItems(total=node.items, left=node.left or 0, succeeded=node.succeeded or 0)
                 if node.is_map and node.items is not None else None)
        nodes[name] = NodeView(task=node.name, map=node.is_map, state=node.state, task_id=node.task_id,
                               run_state=state, started_at=_time(started), finished_at=_time(finished),
                               items=items, error=node.error, parents=parents.get(name, []))
        if name == workflow.sink and workflow.state == "succeeded":
            result = await workflows.sink_result(workflow) if node.is_map else _json(stored)
    return WorkflowView(workflow_id=workflow.workflow_id, name=workflow.name, state=workflow.state,
                        on_failure="continue" if workflow.on_failure == "continue" else "stop",
                        owner=workflow.owner, created_at=workflow.created_at,
                        finished_at=workflow.finished_at, result=result, nodes=nodes)


def _json(stored: str | None) -> Any:
    return orjson.loads(stored) if stored else None

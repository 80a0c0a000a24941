"""A workflow as Redis keeps it: the plan the submit script takes (:class:`PlannedNode`,
:func:`submit`) and the stored hash read back (:class:`WorkflowRecord`, :func:`decode`).

The graph's edges are taken in Lua (``scripts/workflow.lua``, included by every script that
ends a run): the field names below are that file's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

from ..constants import ANONYMOUS
from . import keys
from .model import to_time
from .scripts.calls import Call, _text

#: The task id and item index a map node's message template holds in place of each run's (the
#: Lua's WF_ITEM_ID and WF_ITEM_IX): letters and digits only, so a plain replace finds them.
ITEM_ID = "tgitem0placeholder0id"
ITEM_INDEX = "tgitem0placeholder0ix"
#: Runs one map node may fan out to (the Lua's WF_MAX_ITEMS).
MAX_MAP_ITEMS = 10_000

WorkflowState = Literal["running", "succeeded", "failed", "cancelled"]
#: A node in its workflow: waiting for its parents, released (its runs queued or running), or ended.
NodeState = Literal["waiting", "released", "succeeded", "failed", "cancelled", "skipped"]


@dataclass(frozen=True, slots=True)
class PlannedNode:
    """One node as the submit script stores it. ``task_id``: its run's id (a map node: the base
    its runs' ids are made from, ``<base>-<i>``); ``message``: its run's payload (a map node: the
    template with :data:`ITEM_ID` and :data:`ITEM_INDEX`); ``queue``: the broker list the script
    pushes to ('' when the broker is elsewhere)."""

    node: str
    name: str
    task_id: str
    pending: int
    children: Sequence[str]
    message: bytes
    queue: str
    lane: str
    declared: str
    #: A task node's arguments (JSON), kept in its record.
    arguments: bytes = b"{}"
    #: A map node's list: the node mapped over, the path into its result, and the argument each
    #: item is passed as.
    over: str | None = None
    path: str = ""
    argument: str = ""

    def as_plan(self) -> dict[str, Any]:
        children = orjson.dumps(list(self.children)).decode()
        part: dict[str, Any] = {"node": self.node, "name": self.name, "task": self.task_id,
                                "pending": self.pending, "children": children, "queue": self.queue,
                                "lane": self.lane, "declared": self.declared}
        if self.over is None:
            return {**part, "message": self.message.decode(), "args": self.arguments.decode()}
        return {**part, "template": self.message.decode(), "over": self.over, "path": self.path,
                "argument": self.argument}


def submit(workflow_id: str, *, name: str, owner: str, on_failure: str, nodes: Sequence[PlannedNode],
           order: Sequence[str], sink: str | None, spec: bytes, now: float, ttl: int, failure_ttl: int,
           horizon: float, traceparent: str = "") -> Call[str]:
    """Record a validated workflow (``spec``: its JSON, kept to run it again; ``traceparent``:
    its span, '' untraced: kept, its runs' records keep its trace) and release its roots:
    ``created``, or ``exists``."""
    anonymous = owner == ANONYMOUS
    plan = {"name": name, "owner": "" if anonymous else owner, "on_failure": on_failure,
            "order": orjson.dumps(list(order)).decode(), "sink": sink or "", "spec": spec.decode(),
            "traceparent": traceparent, "nodes": [node.as_plan() for node in nodes]}
    return Call("workflow_submit", [
        keys.workflow(workflow_id), keys.WORKFLOW_INDEX, "" if anonymous else keys.owner_workflows(owner),
        keys.INDEX, "" if anonymous else keys.owner_index(owner),
    ], [workflow_id, repr(now), ttl, failure_ttl, repr(horizon), orjson.dumps(plan)], _text)


def retry(workflow_id: str, owner: str, *, nodes: Sequence[PlannedNode], now: float) -> Call[str]:
    """Run an ended workflow's ``nodes`` (exactly those that did not succeed) again: ``retried``,
    ``missing``, ``already:<state>`` or ``changed`` (the nodes not succeeded are other ones)."""
    anonymous = owner == ANONYMOUS
    return Call("workflow_retry", [keys.workflow(workflow_id), keys.INDEX,
                                   "" if anonymous else keys.owner_index(owner)],
                [workflow_id, repr(now), orjson.dumps({"nodes": [node.as_plan() for node in nodes]})], _text)


def cancel(workflow_id: str) -> Call[str]:
    """Stop releasing, skip what waits: ``cancelled``, ``missing`` or ``already:<state>``; the
    caller then cancels the runs already released."""
    return Call("workflow_cancel", [keys.workflow(workflow_id)], [workflow_id], _text)


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One node as its workflow's hash says."""

    node: str
    name: str
    state: NodeState
    task_id: str
    is_map: bool = False
    children: tuple[str, ...] = ()
    #: A map node: how many runs it fanned out to (None before), how many are left and succeeded.
    items: int | None = None
    left: int | None = None
    succeeded: int | None = None
    #: Why a map node failed without running (its list could not be read).
    error: str | None = None
    over: str | None = None
    path: str = ""
    argument: str = ""

    def run_ids(self) -> list[str]:
        """The task ids of the node's runs (a map node's once it fanned out)."""
        if not self.is_map:
            return [self.task_id]
        return [f"{self.task_id}-{i}" for i in range(self.items or 0)]


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """A workflow as its hash says."""

    workflow_id: str
    name: str
    state: WorkflowState
    on_failure: str
    owner: str | None
    created_at: datetime | None
    finished_at: datetime | None
    sink: str | None
    seq: int
    order: tuple[str, ...]
    #: The workflow as submitted (its JSON), to run it again.
    spec: str = "{}"
    #: How many times it was run again.
    retries: int = 0
    #: The span of its submit (W3C ``traceparent``), when it was submitted traced.
    traceparent: str | None = None
    nodes: dict[str, NodeRecord] = field(default_factory=dict)


def _int(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def decode(workflow_id: str, raw: Mapping[bytes | str, bytes | str]) -> WorkflowRecord | None:
    """A workflow from its hash (``HGETALL``); None when there is none."""
    if not raw:
        return None
    text = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()}
    order = tuple(orjson.loads(text.get("order", "[]")))
    nodes: dict[str, NodeRecord] = {}
    for node in order:
        def get(part: str, node: str = node) -> str | None:
            return text.get(f"n:{node}:{part}")
        is_map = get("template") is not None
        nodes[node] = NodeRecord(
            node=node, name=get("name") or "", state=get("state") or "waiting",  # type: ignore[arg-type]
            task_id=get("task") or "", is_map=is_map, children=tuple(orjson.loads(get("children") or "[]")),
            items=_int(get("items")), left=_int(get("left")), succeeded=_int(get("ok")), error=get("error"),
            over=get("over"), path=get("path") or "", argument=get("argument") or "")
    return WorkflowRecord(
        workflow_id=workflow_id, name=text.get("name", ""), state=text.get("state", "running"),  # type: ignore[arg-type]
        on_failure=text.get("on_failure", "stop"), owner=text.get("owner"),
        created_at=to_time(text["created_at"]) if "created_at" in text else None,
        finished_at=to_time(text["finished_at"]) if "finished_at" in text else None,
        sink=text.get("sink"), seq=int(text.get("seq", "0")), order=order, nodes=nodes,
        spec=text.get("spec", "{}"), retries=int(text.get("retries", "0")),
        traceparent=text.get("traceparent"))


#: The workflow hash's fields a summary reads (``HMGET``), in :func:`decode_summary`'s order.
SUMMARY_FIELDS = ("name", "state", "owner", "created_at", "finished_at", "nodes", "left", "failed")


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    """A workflow without its nodes: what a list shows."""

    workflow_id: str
    name: str
    state: WorkflowState
    owner: str | None
    created_at: datetime | None
    finished_at: datetime | None
    #: Nodes in all, nodes not ended yet, nodes that failed or were cancelled.
    nodes: int
    left: int
    failed: int


def decode_summary(workflow_id: str, values: Sequence[bytes | str | None]) -> WorkflowSummary | None:
    """A summary from ``HMGET`` of :data:`SUMMARY_FIELDS`; None when the workflow is gone."""
    name, state, owner, created, finished, nodes, left, failed = (
        v.decode() if isinstance(v, bytes) else v for v in values)
    if state is None:
        return None
    return WorkflowSummary(
        workflow_id=workflow_id, name=name or "", state=state,  # type: ignore[arg-type]
        owner=owner, created_at=to_time(created) if created else None,
        finished_at=to_time(finished) if finished else None,
        nodes=_int(nodes) or 0, left=_int(left) or 0, failed=_int(failed) or 0)

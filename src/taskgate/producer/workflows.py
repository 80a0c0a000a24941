"""Workflows from the producer's side: submit a validated graph in one script, read it back.

Every node is an ordinary taskgate run (its own record, retries, time limits, cancel): its
Celery message is built here, once, by the one dispatcher, with its arguments as the workflow
gave them (references in place: the worker resolves them, see ``worker.workflows``) and
headers naming its workflow and node. The submit script (``workflow_submit.lua``) stores them
all and releases the roots; each later release happens in the script that ends a parent run
(``workflow.lua``), so no process polls and nothing here runs after the submit.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson

from .. import limits, tracing
from ..auth import Caller
from ..brokers.message import ITEM_HEADER, NODE_HEADER, WORKFLOW_HEADER
from ..constants import ANONYMOUS
from ..exceptions import Conflict, InvalidArguments, Unavailable, WorkflowNotFound
from ..records import keys, scripts
from ..records import workflows as stored
from ..records.workflows import ITEM_ID, ITEM_INDEX, PlannedNode, WorkflowRecord
from ..registry import TaskSpec
from ..workflow.graph import Graph
from ..workflow.spec import MapNode, Ref, WorkflowSpec
from ..workflow.validate import validate_workflow
from .backend import Backend
from .dispatch import Dispatcher
from .subscriptions import Subscriptions
from .workflow_reads import WorkflowReads

#: Runs one round trip cancels, at most.
CANCEL_BATCH = 500


@dataclass(frozen=True, slots=True)
class WorkflowSubmitted:
    """A workflow accepted: its id, and each node's task id (a map node's: the base of its
    runs' ids, ``<base>-<i>``)."""

    workflow_id: str
    tasks: dict[str, str]


class Workflows(WorkflowReads):
    """Submits and reads workflows over the producer's backend and dispatcher (pages of them
    and following one: :class:`.WorkflowReads`)."""

    def __init__(self, backend: Backend, dispatcher: Dispatcher, catalogue: dict[str, TaskSpec],
                 subscriptions: Subscriptions) -> None:
        self.backend, self.dispatcher, self.catalogue = backend, dispatcher, catalogue
        self.subscriptions = subscriptions
        self.settings = backend.settings

    def plan(self, graph: Graph, workflow_id: str, owner: str,
             done: Collection[str] = ()) -> list[PlannedNode]:
        """Each node's new run as the scripts take it, in the graph's order: every node's, or
        (running it again) those not in ``done``, each waiting only for its parents not done."""
        planned = []
        for name in graph.order:
            if name in done:
                continue
            node = graph.node(name)
            spec = self.catalogue[node.task]
            task_id = str(uuid.uuid4())
            kwargs = {arg: value.as_json() if isinstance(value, Ref) else value
                      for arg, value in node.arguments.items()}
            queue = spec.queue or self.settings.default_queue
            headers = {WORKFLOW_HEADER: workflow_id, NODE_HEADER: name}
            is_map = isinstance(node, MapNode)
            run_id = ITEM_ID if is_map else task_id
            if is_map:
                headers[ITEM_HEADER] = ITEM_INDEX
            try:  # its message carries its own submit span, the workflow's child
                with tracing.producer_span(spec.name, task_id, queue, owner=owner):
                    message = self.dispatcher.message(spec.celery_name, run_id, kwargs, queue=queue,
                                                      owner=owner, delivery_tag=run_id, headers=headers)
                arguments = orjson.dumps(kwargs)
            except orjson.JSONEncodeError as exc:
                raise InvalidArguments(f"node {name!r}: arguments must travel as portable JSON "
                                       f"({exc})") from None
            limited = spec.rate is not None or spec.concurrency is not None
            planned.append(PlannedNode(
                node=name, name=spec.name, task_id=task_id,
                pending=sum(parent not in done for parent in graph.parents[name]),
                children=graph.children[name], message=message.payload, queue=message.list_key or "",
                lane=limits.lane_of(spec, owner, kwargs) if limited else "",
                declared=limits.declared_json(spec), arguments=arguments,
                over=node.map.over.node if isinstance(node, MapNode) else None,
                path=(node.map.over.path or "") if isinstance(node, MapNode) else "",
                argument=node.map.argument if isinstance(node, MapNode) else ""))
        return planned

    async def submit(self, spec: WorkflowSpec, caller: Caller,
                     allowed: Callable[[str], bool] | None = None) -> WorkflowSubmitted:
        """Validate ``spec`` (``InvalidArguments`` naming the node: nothing is queued), then
        record it and queue its roots in one script. ``allowed``: which tasks ``caller`` may
        run (default: every task this producer serves). Traced, a span ``taskgate submit
        workflow <name>`` (the current span's child) is the parent of each node's PRODUCER
        span, built now (each node's message carries its own, whenever its run is released),
        and the workflow's hash keeps it (``traceparent``), its runs' records its trace."""
        graph = validate_workflow(spec, self.catalogue, allowed or (lambda name: name in self.catalogue))
        workflow_id = str(uuid.uuid4())
        with tracing.workflow_span(spec.name, workflow_id, owner=caller.owner):
            nodes = self.plan(graph, workflow_id, caller.owner)
            sinks = graph.sinks
            now = time.time()
            history = max(self.settings.result_ttl, self.settings.failure_ttl)
            call = stored.submit(workflow_id, name=spec.name, owner=caller.owner, on_failure=spec.on_failure,
                                 nodes=nodes, order=graph.order, sink=sinks[0] if len(sinks) == 1 else None,
                                 spec=orjson.dumps(spec.as_json()), now=now, ttl=self.settings.result_ttl,
                                 failure_ttl=self.settings.failure_ttl, horizon=now - history,
                                 traceparent=tracing.traceparent())
            await self._record(call, workflow_id)
        return WorkflowSubmitted(workflow_id, {node.node: node.task_id for node in nodes})

    async def _record(self, call: scripts.Call[str], workflow_id: str) -> None:
        try:
            async with self.backend.deadline():
                await self.backend.scripts(call)
        except Unavailable as exc:
            raise Unavailable(exc.component, f"{exc.detail}: the workflow may or may not have been "
                                     f"recorded; GET /workflows/{workflow_id} tells once Redis answers",
                                     outcome="unknown") from exc

    async def get(self, workflow_id: str, caller: Caller) -> WorkflowRecord:
        """The workflow, or ``WorkflowNotFound`` (also when ``caller`` may not see it)."""
        async with self.backend.deadline():
            raw = await self.backend.redis.hgetall(keys.workflow(workflow_id))
        found = stored.decode(workflow_id, raw)
        if found is None or not caller.may_see(found.owner):
            raise WorkflowNotFound(workflow_id)
        return found

    async def retry(self, workflow_id: str, caller: Caller,
                    allowed: Callable[[str], bool] | None = None) -> WorkflowSubmitted:
        """Run an ended workflow's nodes that did not succeed again (failed, cancelled,
        skipped), each as a new run, passing on the results of those that succeeded. The
        workflow is validated again first (its tasks may have changed). ``Conflict`` while it
        runs or once it succeeded. Returns the new runs' task ids by node. Traced, the new runs
        are in the workflow's trace, linked to the current span."""
        workflow = await self.get(workflow_id, caller)
        if workflow.finished_at is None or workflow.state == "succeeded":
            raise Conflict(f"workflow {workflow_id} is {workflow.state}; only a failed or cancelled workflow "
                           "can be run again, once it ended")
        spec = WorkflowSpec.model_validate_json(workflow.spec)
        graph = validate_workflow(spec, self.catalogue, allowed or (lambda name: name in self.catalogue))
        done = {name for name, node in workflow.nodes.items() if node.state == "succeeded"}
        # traced: the new runs join the workflow's trace (its first submit's span), linked to
        # the span asking for them (the request's)
        first = {"traceparent": workflow.traceparent} if workflow.traceparent else None
        asking = tracing.here({"taskgate.workflow.retry": workflow.retries + 1})
        with tracing.workflow_span(workflow.name, workflow_id, owner=workflow.owner or ANONYMOUS,
                                   parent=first, links=[asking]):
            nodes = self.plan(graph, workflow_id, workflow.owner or ANONYMOUS, done)
            async with self.backend.deadline():
                said = await self.backend.scripts(stored.retry(workflow_id, workflow.owner or ANONYMOUS,
                                                               nodes=nodes, now=time.time()))
        if said == "missing":
            raise WorkflowNotFound(workflow_id)
        if said != "retried":
            raise Conflict(f"workflow {workflow_id} changed meanwhile ({said}); read it again")
        return WorkflowSubmitted(workflow_id, {node.node: node.task_id for node in nodes})

    async def cancel(self, workflow_id: str, caller: Caller) -> WorkflowRecord:
        """Cancel a running workflow: nothing more starts, what waits is skipped, and every run
        already released is cancelled as ``POST /tasks/{id}/cancel`` would (a queued one at
        once, a running one flagged). ``Conflict`` once it has ended."""
        await self.get(workflow_id, caller)
        async with self.backend.deadline():
            said = await self.backend.scripts(stored.cancel(workflow_id))
        if said == "missing":
            raise WorkflowNotFound(workflow_id)
        if said.startswith("already:"):
            raise Conflict(f"workflow {workflow_id} already {said.removeprefix('already:')}; only a running "
                           "workflow can be cancelled")
        workflow = await self.get(workflow_id, caller)
        owner = workflow.owner or ANONYMOUS
        runs = [task_id for node in workflow.nodes.values() if node.state == "released"
                for task_id in node.run_ids()]
        for start in range(0, len(runs), CANCEL_BATCH):
            async with self.backend.deadline():
                await self.backend.scripts.many([
                    scripts.cancel(task_id, owner, now=time.time(), ttl=self.settings.result_ttl)
                    for task_id in runs[start:start + CANCEL_BATCH]])
        return await self.get(workflow_id, caller)

    async def runs(self, workflow: WorkflowRecord, fields: tuple[str, ...]) -> dict[str, list[Any]]:
        """``fields`` of each task node's run record (map nodes' runs are counted in the
        workflow itself), by node."""
        task_nodes = [node for node in workflow.nodes.values() if not node.is_map]
        async with self.backend.deadline():
            pipe = self.backend.redis.pipeline(transaction=False)
            for node in task_nodes:
                pipe.hmget(keys.record(node.task_id), *fields)
            replies = await pipe.execute()
        return {node.node: [v.decode() if isinstance(v, bytes) else v for v in reply]
                for node, reply in zip(task_nodes, replies, strict=True)}

    async def sink_result(self, workflow: WorkflowRecord) -> list[Any]:
        """A map sink's result: the list of its runs' results, in order."""
        node = workflow.nodes[workflow.sink or ""]
        async with self.backend.deadline():
            pipe = self.backend.redis.pipeline(transaction=False)
            for task_id in node.run_ids():
                pipe.hget(keys.record(task_id), "result")
            replies = await pipe.execute()
        return [orjson.loads(raw) if raw is not None else None for raw in replies]

"""``WorkflowRun``: the handle ``await wf.submit()`` returns (see :class:`taskgate.Workflow`).

As a :class:`~taskgate.Job` does for one task, it holds the workflow id and the
:class:`~taskgate.Taskgate` it was submitted through, and runs each call on that Taskgate's
clients. Waiting subscribes to the workflow's events channel first and reads its hash second
(so no change slips between them), then reads it again only when an event says the sink node
ended or the workflow did: woken by the scripts that end each node, never by polling. (Waiting
on the sink's own run would not do: a map sink has no runs until it fans out, and none at all
when a node before it failed.)
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson

from ..auth import Caller
from ..exceptions import ResultTimeout, TaskCancelled, TaskFailed
from ..records import keys
from ..records.workflows import WorkflowRecord
from ..registry import TaskSpec
from .job import WAIT_SLICE, outcome
from .workflow_view import WorkflowView, view_of

if TYPE_CHECKING:
    from ..gate import Taskgate
    from .client import Producer

T = TypeVar("T")

#: A node's states once it will not change.
NODE_ENDED = frozenset({"succeeded", "failed", "cancelled", "skipped"})


class WorkflowRun(Generic[T]):
    """A submitted workflow. ``T``: its sink node's result type (``submit(returns=...)``)."""

    def __init__(self, gate: Taskgate, workflow_id: str, tasks: dict[str, str], sink: str | None,
                 sink_task: TaskSpec | None, caller: Caller) -> None:
        self._gate, self._caller, self._sink_task = gate, caller, sink_task
        #: The workflow id (what ``GET /workflows/{workflow_id}`` takes).
        self.id = workflow_id
        #: Each node's task id (``GET /tasks/{task_id}``); a map node's runs are ``<id>-<i>``.
        self.tasks = tasks
        #: The node whose result :meth:`result` returns: the only one no other node waits for
        #: (None when there are several).
        self.sink = sink

    def __repr__(self) -> str:
        return f"<WorkflowRun {self.id}>"

    async def status(self) -> WorkflowView:
        """The workflow now, as ``GET /workflows/{id}`` shows it: its state, every node's state
        and run, and its sink's result (as JSON) once it succeeded. ``WorkflowNotFound`` once it
        expired."""
        return await self._gate.call(
            lambda producer: self._view(producer, producer.workflows.get(self.id, self._caller)))

    @staticmethod
    async def _view(producer: Producer, reading: Any) -> WorkflowView:
        return await view_of(producer.workflows, await reading)

    async def cancel(self) -> WorkflowView:
        """Cancel it: nothing more starts, every node still waiting is skipped, and each run
        already queued is cancelled, each running one asked to stop (as :meth:`Job.cancel
        <taskgate.Job.cancel>`). ``Conflict`` once it has ended."""
        return await self._gate.call(
            lambda producer: self._view(producer, producer.workflows.cancel(self.id, self._caller)))

    async def wait(self, timeout: float | None = None) -> WorkflowView:  # noqa: ASYNC109
        """The workflow once every node ended (``finished_at`` set), or as it is after
        ``timeout`` seconds (None: as long as it takes)."""
        return await self._gate.call(
            lambda producer: self._view(producer, self._wait(producer, timeout, sink_only=False)))

    async def result(self, timeout: float | None = None) -> T:  # noqa: ASYNC109
        """Wait until the sink node ends and return its result, typed as its task declares (a
        map sink: the list of its runs' results, in order), without waiting for other nodes
        still finishing. When it will not succeed, the error of the run that stopped it:
        ``TaskFailed`` (its ``task_id`` and ``error``), ``TaskCancelled`` or ``TaskExpired``,
        as :meth:`Job.result <taskgate.Job.result>` raises them, with a note naming the
        workflow and node (``TaskFailed`` with error type ``MapFailed`` when a map node's value
        was no list); ``TaskCancelled`` when the workflow was cancelled. ``TimeoutError``
        (:class:`~taskgate.ResultTimeout`, naming the sink's task) if it has not ended within
        ``timeout`` seconds. ``TypeError`` when the workflow has several sinks: use
        :meth:`wait` and each node's task."""
        if self.sink is None:
            raise TypeError(f"workflow {self.id} has several sinks: its result is no one node's; "
                            "await run.wait() and read each node's task (run.tasks)")
        value: T = await self._gate.call(lambda producer: self._result(producer, timeout))
        return value

    async def _result(self, producer: Producer, timeout: float | None) -> Any:  # noqa: ASYNC109
        sink = self.sink or ""
        workflow = await self._wait(producer, timeout, sink_only=True)
        node = workflow.nodes[sink]
        if node.state == "succeeded":
            spec = self._sink_task
            if spec is None:  # a handle made without the task: the result as stored
                return (await producer.workflows.sink_result(workflow) if node.is_map
                        else (await producer.reader.get(node.task_id, self._caller)).result)
            if node.is_map:
                return [spec.load_result(value) for value in await producer.workflows.sink_result(workflow)]
            return spec.load_result((await producer.reader.get(node.task_id, self._caller)).result)
        if node.state not in NODE_ENDED:
            raise _noted(ResultTimeout(node.task_id, node.state, timeout or 0.0), self.id, sink)
        if workflow.state == "cancelled":
            raise TaskCancelled(f"workflow {self.id} was cancelled", node.task_id)
        raise await self._cause(producer, workflow)

    async def _wait(self, producer: Producer, timeout: float | None,  # noqa: ASYNC109
                    sink_only: bool) -> WorkflowRecord:
        """The workflow once its sink ended (``sink_only``) or it ended, or after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def settled(workflow: WorkflowRecord) -> bool:
            sink = workflow.nodes.get(self.sink or "")
            return workflow.finished_at is not None or (sink_only and sink is not None
                                                        and sink.state in NODE_ENDED)

        async with contextlib.AsyncExitStack() as stack:
            async with producer.backend.deadline():
                subscription = await stack.enter_async_context(
                    producer.subscriptions(keys.workflow_events(self.id), owner=self._caller.owner))
            workflow = await producer.workflows.get(self.id, self._caller)
            while not settled(workflow):
                left = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
                if left <= 0:
                    break
                message = await subscription.get(left)
                if message is None or self._tells(message[1], sink_only):
                    workflow = await producer.workflows.get(self.id, self._caller)
            return workflow

    def _tells(self, data: bytes, sink_only: bool) -> bool:
        """Whether an event may settle the wait: the sink node's end, or the workflow's."""
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if event.get("left") == 0 or event.get("state") != "running":
            return True
        return sink_only and event.get("node") == self.sink and event.get("node_state") in NODE_ENDED

    async def _cause(self, producer: Producer, workflow: WorkflowRecord) -> Exception:
        """The error of the first node (in the graph's order) that failed or was cancelled."""
        for node in workflow.nodes.values():
            if node.state not in ("failed", "cancelled"):
                continue
            if node.error is not None:  # a map node that could not fan out
                return _noted(TaskFailed(node.task_id, {"type": "MapFailed", "message": node.error,
                                                        "retryable": False}), self.id, node.node)
            for record in await producer.reader.many(node.run_ids()):
                if record is not None and record.state in ("failed", "cancelled", "expired"):
                    try:
                        outcome(record, None)
                    except Exception as exc:
                        return _noted(exc, self.id, node.node)
        return TaskCancelled(f"workflow {self.id}: node {self.sink} was skipped", workflow.nodes[
            self.sink or ""].task_id)


def _noted(exc: Exception, workflow_id: str, node: str) -> Exception:
    exc.add_note(f"in workflow {workflow_id}, node {node!r}")
    return exc


__all__ = ["NODE_ENDED", "WorkflowRun"]

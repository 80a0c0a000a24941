"""Handles on submitted tasks: :class:`Job` (async) and :class:`SyncJob` (blocking).

A handle holds the task id and the :class:`~taskgate.Taskgate` it was submitted through; each
call goes to that Taskgate's Redis clients (on its event loop, whichever loop or thread the
caller is on) under the same deadline as the API's. Waiting is woken by the workers' events,
never by polling.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from ..auth import Caller
from ..exceptions import ResultTimeout, TaskCancelled, TaskExpired, TaskFailed
from ..records import TaskRecord
from ..registry import TaskSpec
from ..states import TaskState

if TYPE_CHECKING:
    from ..gate import Taskgate
    from .client import Producer

T = TypeVar("T")

#: Longest single wait on a task's events inside ``result(timeout=None)`` (it waits again).
WAIT_SLICE = 60.0


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One change of a task, as ``GET /tasks/{id}/events`` sends it: ``state`` when its state
    changed (or first, the state it was in), ``progress`` for a progress report."""

    kind: Literal["state", "progress"]
    #: The change's sequence number (the SSE event id).
    seq: int
    record: TaskRecord


def outcome(record: TaskRecord, spec: TaskSpec | None) -> Any:
    """The typed result of an ended task, or its failure, cancellation or expiry raised."""
    if record.state is TaskState.FAILED:
        raise TaskFailed(record.task_id, record.error)
    if record.state is TaskState.CANCELLED:
        raise TaskCancelled(f"task {record.task_id} was cancelled", record.task_id)
    if record.state is TaskState.EXPIRED:
        raise TaskExpired(record.task_id, record.error)
    return spec.load_result(record.result) if spec is not None else record.result


class Job(Generic[T]):
    """A submitted task. ``T`` is what its function returns."""

    def __init__(self, gate: Taskgate, task_id: str, spec: TaskSpec | None, caller: Caller) -> None:
        self._gate, self._spec, self._caller = gate, spec, caller
        #: The task id (what ``GET /tasks/{task_id}`` takes).
        self.id = task_id

    def __repr__(self) -> str:
        return f"<Job {self._spec.name if self._spec else 'task'} {self.id}>"

    @property
    def sync(self) -> SyncJob[T]:
        """The same handle for blocking code."""
        return SyncJob(self)

    async def status(self) -> TaskRecord:
        """The task's record now: state, progress, attempts, times, result or error.
        ``TaskNotFound`` once it expired or was forgotten."""
        return await self._gate.call(lambda producer: producer.reader.get(self.id, self._caller))

    async def result(self, timeout: float | None = None) -> T:  # noqa: ASYNC109
        """Wait until the task ends and return its result, typed (a pydantic model again for a
        task that returns one). ``TaskFailed`` (with the error envelope) if it failed,
        ``TaskCancelled`` if it was cancelled, ``TaskExpired`` if it was not started before its
        expiry, ``TimeoutError`` if it has not ended within
        ``timeout`` seconds (None: wait as long as it takes)."""
        record = await self._gate.call(lambda producer: self._wait(producer, timeout))
        if not record.ended:
            raise ResultTimeout(self.id, str(record.state), timeout or 0.0)
        value: T = outcome(record, self._spec)
        return value

    async def _wait(self, producer: Producer, timeout: float | None) -> TaskRecord:  # noqa: ASYNC109
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
            record = await producer.reader.wait(self.id, max(0.0, left), self._caller)
            if record.ended or (deadline is not None and time.monotonic() >= deadline):
                return record

    async def cancel(self, terminate: bool = False) -> TaskRecord:
        """Cancel it: a queued or retrying task never starts; a running one is asked to stop
        (an ``async def`` task's coroutine is cancelled; a sync one sees ``cancel_requested()``
        and ends ``cancelled`` if it checks, else runs to its end and ends in its own state),
        or with ``terminate`` its process is killed (``cancelled``). The record's
        ``cancel_requested_at`` says when cancel was first asked. ``Conflict`` once it has ended."""
        return await self._gate.call(
            lambda producer: producer.control.cancel(self.id, terminate=terminate, caller=self._caller))

    def events(self) -> AsyncIterator[JobEvent]:
        """Each change as it happens, the first being the task's state now, ending with its
        terminal state (the events of ``GET /tasks/{id}/events``)."""
        return self._gate.stream(lambda producer: _events(producer, self.id, self._caller))


async def _events(producer: Producer, task_id: str, caller: Caller) -> AsyncIterator[JobEvent]:
    async with producer.reader.watch(task_id, caller) as (record, subscription):
        state = None
        seen = -1
        while True:
            if record.seq > seen:
                seen = record.seq
                kind: Literal["state", "progress"] = "progress" if record.state == state else "state"
                state = record.state
                yield JobEvent(kind, record.seq, record)
            if record.ended:
                return
            changed = await producer.reader.next_change(task_id, subscription, WAIT_SLICE)
            if changed is not None and changed.newer_than(record):
                record = changed


class SyncJob(Generic[T]):
    """:class:`Job` for blocking code: the same methods, waiting in the calling thread."""

    def __init__(self, job: Job[T]) -> None:
        self.job = job
        #: The task id.
        self.id = job.id

    def __repr__(self) -> str:
        return repr(self.job).replace("<Job", "<SyncJob", 1)

    def status(self) -> TaskRecord:
        """See :meth:`Job.status`."""
        return self.job._gate.call_sync(lambda _: self.job.status())

    def result(self, timeout: float | None = None) -> T:
        """See :meth:`Job.result`."""
        return self.job._gate.call_sync(lambda _: self.job.result(timeout))

    def cancel(self, terminate: bool = False) -> TaskRecord:
        """See :meth:`Job.cancel`."""
        return self.job._gate.call_sync(lambda _: self.job.cancel(terminate))

    def events(self) -> Iterator[JobEvent]:
        """See :meth:`Job.events`."""
        return self.job._gate.stream_sync(lambda producer: _events(producer, self.id, self.job._caller))

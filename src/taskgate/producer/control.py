"""Changing tasks from the API side: cancel, forget, and the dead letters' requeue and drop."""

from __future__ import annotations

import asyncio
import time

from celery import Celery

from .. import tracing, validation
from ..auth import Caller
from ..brokers import Broker
from ..constants import ANONYMOUS
from ..exceptions import Conflict, InvalidArguments, TaskNotFound, UnknownTask
from ..records import TaskRecord, keys, scripts
from ..registry import TaskSpec
from .backend import Backend
from .reads import Reader
from .submit import SYSTEM, Options, Submission, Submitter


def _to_run(record: TaskRecord, why: str) -> tracing.Link | None:
    """A link to the submit span ``record`` kept (None without one; a record written before
    span ids were kept links to its trace alone), naming it as ``why``."""
    if not record.trace_id:
        return None
    return tracing.link(record.trace_id, record.span_id, attributes={why: record.task_id})


class Control:
    """Cancels, replays, forgets and requeues; every call runs under the backend's deadline."""

    def __init__(self, backend: Backend, reader: Reader, broker: Broker, app: Celery,
                 catalogue: dict[str, TaskSpec], submitter: Submitter) -> None:
        self.backend, self.reader, self.broker, self.app = backend, reader, broker, app
        self.catalogue, self.submitter = catalogue, submitter

    async def cancel(self, task_id: str, terminate: bool = False, caller: Caller = SYSTEM) -> TaskRecord:
        """Cancel a queued task at once, or flag a running one (the record keeps when:
        ``cancel_requested_at``; a sync task that never checks the flag runs to its end);
        ``Conflict`` if it finished. ``terminate``: also stop the process running it (Celery's
        revoke with SIGTERM; the task ends ``cancelled``)."""
        record = await self.reader.get(task_id, caller)
        async with self.backend.deadline():
            outcome = await self.backend.scripts(scripts.cancel(
                task_id, record.owner or ANONYMOUS, now=time.time(), ttl=self.backend.settings.result_ttl))
        if outcome == "missing":
            raise TaskNotFound(task_id)
        if outcome.startswith("already:"):
            raise Conflict(f"task {task_id} already {outcome.removeprefix('already:')}; only queued, "
                           "retrying or started tasks can be cancelled")
        if outcome == "cancelling" and terminate:
            loop = asyncio.get_running_loop()
            async with self.backend.deadline("broker"):
                await loop.run_in_executor(None, self._revoke, task_id)
        return await self.reader.get(task_id, caller)

    def _revoke(self, task_id: str) -> None:
        self.app.control.revoke(task_id, terminate=True, signal="SIGTERM")

    async def forget(self, task_id: str, caller: Caller = SYSTEM) -> None:
        """Delete a finished task's record; ``Conflict`` while it may still run."""
        record = await self.reader.get(task_id, caller)
        if not record.ended:
            raise Conflict(f"task {task_id} is {record.state}; cancel it first or wait until it ends")
        async with self.backend.deadline():
            pipe = self.backend.redis.pipeline(transaction=True)
            pipe.delete(keys.record(task_id))
            pipe.zrem(keys.INDEX, task_id)
            pipe.zrem(keys.owner_index(record.owner or ANONYMOUS), task_id)
            pipe.zrem(keys.DEAD, task_id)
            await pipe.execute()

    async def _dead_letter(self, task_id: str, caller: Caller) -> TaskRecord:
        record = await self.reader.get(task_id, caller)
        if record.dead_reason is None:
            raise TaskNotFound(task_id, what="dead letter")
        return record

    async def requeue(self, task_id: str, caller: Caller = SYSTEM) -> TaskRecord:
        """Run a dead-lettered task again: same id and arguments, fresh attempt counts. Traced,
        its new run's PRODUCER span is the current span's child, linked to the trace the record
        kept (the one it died in), and the record keeps the new trace."""
        record = await self._dead_letter(task_id, caller)
        spec = self.catalogue.get(record.name or "")
        if spec is None:
            raise UnknownTask(record.name or "")
        arguments = record.args if isinstance(record.args, dict) else {}
        queue = spec.queue or self.backend.settings.default_queue
        # its new run: the current span's child (the request's), linked to the trace it died in
        with tracing.producer_span(spec.name, task_id, queue, owner=record.owner or ANONYMOUS,
                                   links=[_to_run(record, "taskgate.requeue_of")]):
            # a fresh delivery tag, as before it died
            message = self.submitter.dispatcher.message(spec.celery_name, task_id, arguments, queue=queue,
                                                        owner=record.owner or ANONYMOUS)
            async with self.backend.deadline():
                outcome = await self.backend.scripts(scripts.requeue(
                    task_id, record.owner or ANONYMOUS, queue=message.list_key, message=message.payload,
                    now=time.time(), **tracing.record_ids()))
        if outcome == "missing":
            raise TaskNotFound(task_id, what="dead letter")
        if outcome == "queued" and not self.submitter.dispatcher.inline:  # a waiting one: the outbox's
            async with self.backend.deadline("broker"):
                await self.broker.publish(message.queue, message.parts)
        return await self.reader.get(task_id)

    async def replay(self, task_id: str, caller: Caller = SYSTEM) -> Submission:
        """A new task with the same name and arguments as ``task_id`` (any state), for the same
        owner; its record says ``replay_of``. Traced, its submit links to ``task_id``'s trace."""
        record = await self.reader.get(task_id, caller)
        spec = self.catalogue.get(record.name or "")
        if spec is None:
            raise Conflict(f"task {task_id} ran {record.name!r}, which is not declared any more; it "
                           "cannot be replayed")
        if not isinstance(record.args, dict):
            raise Conflict(f"task {task_id} has no stored arguments (submitted by an earlier version); "
                           "it cannot be replayed")
        try:  # the one validator, as when they were submitted
            arguments = validation.arguments(spec.args_model, record.args)
        except InvalidArguments as exc:
            raise Conflict(f"task {task_id}'s arguments no longer fit {spec.name}'s signature: "
                           f"{exc}") from None
        owner = Caller(owner=record.owner or ANONYMOUS)
        return await self.submitter.submit(spec, arguments, Options(replay_of=task_id), caller=owner,
                                           links=[_to_run(record, "taskgate.replay_of")])

    async def drop(self, task_id: str, caller: Caller = SYSTEM) -> None:
        """Remove a task from the dead letters (its record stays until it expires)."""
        await self._dead_letter(task_id, caller)
        async with self.backend.deadline():
            removed = await self.backend.redis.zrem(keys.DEAD, task_id)
        if not removed:
            raise TaskNotFound(task_id, what="dead letter")

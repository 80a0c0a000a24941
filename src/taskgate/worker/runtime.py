"""Inside the worker: the Task base class that keeps a task's record truthful.

``TaskgateTask.__call__`` wraps every run of a declared task: it moves the record to
``started`` (or skips a task cancelled while queued, expired before it started, or already
finished), validates the arguments against the generated model, runs the plain function (an
``async def`` one on the process's event loop, see ``aio``), and records the result, a retry
(with ``next_attempt_at``) or a client-safe error. Tasks call :func:`report_progress` and
:func:`cancel_requested` while they run. A task that taskgate ends or parks without Celery
seeing it end (cancelled, expired, dead-lettered at start, a retry parked in the delayed set)
is announced to Celery's event stream as Celery would have (:class:`CancelAwareRequest`), so
Flower shows what the record says.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
from billiard.einfo import ExceptionWithTraceback  # type: ignore[import-untyped]
from billiard.exceptions import TimeLimitExceeded, WorkerLostError  # type: ignore[import-untyped]
from celery import Task
from celery.exceptions import Ignore, Reject
from celery.signals import task_revoked
from celery.worker.request import Request
from redis.exceptions import RedisError

from .. import tracing, validation
from ..brokers import parks_delays
from ..brokers.message import OWNER_HEADER, build_message, envelope, queue_for_priority
from ..constants import ANONYMOUS
from ..exceptions import TaskCancelled, error_envelope
from ..records import keys, scripts
from . import aio, recovery, workflows
from .celery_app import settings_of
from .running import Records, Running, current, pulse, records

if TYPE_CHECKING:
    from ..registry import TaskSpec

log = logging.getLogger("taskgate.worker")

__all__ = ["TaskgateTask", "recovery"]

class CancelledIgnore(Ignore):  # type: ignore[misc]
    """Raised in the worker by a task that ends ``cancelled``: asked to stop while running, or
    found cancelled at start. Celery skips it like any :class:`~celery.exceptions.Ignore`."""


class ExpiredIgnore(CancelledIgnore):
    """Raised in the worker by a task found ``expired`` at start (not started before its
    expiry): never run, skipped like a cancelled one, announced as revoked with ``expired``."""


class DeadLetteredIgnore(Ignore):  # type: ignore[misc]
    """Raised in the worker by a task found dead-lettered at start (delivered
    ``max_deliveries`` times, its worker dying each time): never run; its argument is the
    record's error as Celery shows an exception (``Type('message')``), announced as the task's
    failure."""


class ParkedIgnore(Ignore):  # type: ignore[misc]
    """Raised in the worker by a failed attempt whose retry waits in taskgate's delayed set
    (not Celery's ``retry``); its argument is the attempt's exception, as Celery shows one
    (``repr``), announced as the task's retry."""


class CancelAwareRequest(Request):  # type: ignore[misc]
    """The worker's main-process request of a taskgate task.

    ``Ignore`` makes Celery send no task event, so a monitor would show a task that taskgate
    ended (or parked) started forever. This sends the event Celery would have sent for what the
    record says: on :class:`CancelledIgnore` Celery's own ``task-revoked`` (the fields
    ``Request._announce_revoked`` sends; ``expired`` true for :class:`ExpiredIgnore`), once: not
    when ``revoke(terminate=True)`` already announced it; on :class:`DeadLetteredIgnore`
    ``task-failed`` with the record's error (Flower: FAILURE); on :class:`ParkedIgnore`
    ``task-retried`` with the attempt's exception (Flower: RETRY, until the next attempt
    starts). ``send_event`` sends only while the worker sends task events (``--task-events``,
    or switched on by Flower).

    When the pool process running the task vanished, the task's own handlers never ran, so
    the record would say ``started`` for good. Celery's handling decides what happens to the
    message, and the record follows it: a hard ``time_limit`` (message acknowledged) ends
    ``failed`` with error type ``TimeLimitExceeded``; a process that died (a kill, the
    out-of-memory killer: ``WorkerLostError``, message requeued at the back of its queue) goes
    back to ``queued``, its error saying why, until it starts again (each start counts a
    delivery, so one that keeps killing its process is dead-lettered).
    """

    _already_revoked: bool  # Celery's: set once the request announced itself revoked

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _received[0] = self  # Celery logs its "received" line next (see received_headers)

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        # exc_info is billiard's ExceptionInfo, back from the pool: .type is the raised class.
        kind = getattr(exc_info, "type", None)
        if kind in (CancelledIgnore, ExpiredIgnore) and not self._already_revoked:
            self._already_revoked = True
            self.send_event("task-revoked", terminated=False, signum=None, expired=kind is ExpiredIgnore)
        elif kind is DeadLetteredIgnore:
            self.send_event("task-failed", exception=_said(exc_info), traceback="")
        elif kind is ParkedIgnore:
            self.send_event("task-retried", exception=_said(exc_info), traceback="")
        lost = self._lost(getattr(exc_info, "exception", None))
        outcome = super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        if lost is not None:
            _record_lost(records(settings_of(self.task.app)), self.id, self.name, *lost)
        return outcome

    def _lost(self, exc: Any) -> tuple[Literal["failed", "queued"], dict[str, Any]] | None:
        """(state, error) for the record when ``exc`` says the pool process vanished; else None."""
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        if isinstance(exc, TimeLimitExceeded):
            return "failed", {"type": "TimeLimitExceeded", "retryable": False,
                              "message": f"hard time limit ({exc.args[0] if exc.args else '?'} s) exceeded: "
                                         "the process running the task was killed"}
        cancelled = self._already_revoked or getattr(self, "_already_cancelled", False)
        died = isinstance(exc, SystemExit | KeyboardInterrupt) and not cancelled
        if isinstance(exc, WorkerLostError) or died:
            return "queued", {"type": "WorkerLostError", "retryable": True,
                              "message": f"the process running the task died ({exc}); requeued at the back "
                                         "of its queue"}
        return None


#: The request of a taskgate task this worker's main process built last: Celery builds one per
#: message and logs its "received" line at once, in the same thread.
_received: list[CancelAwareRequest | None] = [None]


def received_headers(task_id: str) -> dict[str, Any] | None:
    """The headers of the message of ``task_id`` this worker's main process just received (None
    unless it is the last one built): for its "received" log line, which Celery logs with the
    task's id and name only (service.logs: the line's ``trace_id``)."""
    last = _received[0]
    return last.request_dict if last is not None and last.id == task_id else None


class TaskgateTask(Task):  # type: ignore[misc]
    """Base class of declared tasks: records every transition of the task's life."""

    #: Celery builds each worker request of these tasks from this class.
    Request = CancelAwareRequest
    #: The declared task (set per task class by ``@taskgate.task``).
    taskgate_spec: TaskSpec
    #: Loses nothing, in any Celery app: acknowledged once it ran, requeued if its process died
    #: (taskgate's own app sets the same for every task; a user's app keeps its own defaults).
    acks_late = True
    reject_on_worker_lost = True

    @property
    def spec(self) -> TaskSpec:
        return self.taskgate_spec

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.id is None or not tracing.active():  # called directly, or not traced
            return self._call(*args, **kwargs)
        # its run is a CONSUMER span continuing the trace its message carries
        queue = (request.delivery_info or {}).get("routing_key") or settings_of(self.app).default_queue
        with tracing.consumer_span(request, self.spec.name, request.id, queue,
                                   attempt=(request.retries or 0) + 1,
                                   owner=getattr(request, OWNER_HEADER, None)):
            return self._call(*args, **kwargs)

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        if task_id is None:  # called directly, not through a worker
            return self.run(*args, **kwargs)
        rec = records(settings_of(self.app))
        settings = rec.settings
        spec = self.spec
        arguments = dict(zip(spec.args_model.model_fields, args, strict=False)) | kwargs
        try:
            verdict = self._start(rec, task_id, arguments)
        except RedisError as exc:
            rec.owners.pop(task_id, None)
            log.warning("task %s[%s]: Redis unavailable (%s); requeued", self.name, task_id, exc)
            raise Reject(str(exc), requeue=True) from exc
        if verdict != "run":
            rec.owners.pop(task_id, None)
            tracing.event("taskgate.not_run", {"taskgate.verdict": verdict})
        if verdict == "dead":
            log.error("task %s[%s] dead-lettered: delivered %d times, its worker died each time",
                      self.name, task_id, settings.max_deliveries)
            raise DeadLetteredIgnore(repr(WorkerLostError(  # the record's error, as start.lua words it
                f"the task was delivered {settings.max_deliveries} times and its worker died each time; "
                "dead-lettered")))
        if verdict != "run":
            log.info("task %s[%s] not run: %s", self.name, task_id, verdict)
            raise (CancelledIgnore() if verdict == "cancelled" else ExpiredIgnore() if verdict == "expired"
                   else Ignore())
        beat = pulse(self.request.hostname or "")
        beat.enter(task_id)
        try:
            return self._run(task_id, arguments)
        finally:  # alive until its end is recorded: a requeued copy then finds it ended
            beat.leave(task_id)
            rec.owners.pop(task_id, None)

    def _start(self, rec: Records, task_id: str, arguments: dict[str, Any]) -> scripts.StartVerdict:
        """Run the start script: with the owner the message names (the script checks it against
        the record and names the right one otherwise), and with the arguments only when the
        script is about to dead-letter the task. Remembers the owner for the task's later steps."""
        settings, spec = rec.settings, self.spec
        said = getattr(self.request, OWNER_HEADER, None)
        owner = said if isinstance(said, str) else ANONYMOUS
        sent = b""
        for _ in range(3):  # at most: the wrong owner, then the arguments, then the decision
            reply = rec.run(scripts.start(
                task_id, owner, name=spec.name, now=time.time(), ttl=settings.result_ttl,
                max_deliveries=settings.max_deliveries, node=self.request.hostname or "",
                failure_ttl=settings.failure_ttl, arguments=sent))
            if reply.verdict == "owner" and reply.owner is not None:
                owner = reply.owner
            elif reply.verdict == "arguments":
                sent = arguments_json(arguments)
            else:
                rec.owners[task_id] = owner
                return reply.verdict
        raise RuntimeError(f"task {task_id}: the start script kept asking for more")

    def _run(self, task_id: str, arguments: dict[str, Any]) -> Any:
        """Run the started task and record how it ended."""
        rec, spec = records(), self.spec
        settings = rec.settings
        running = Running(task_id)
        token = current.set(running)
        try:
            node = workflows.headers_of(self.request)
            if node:  # a workflow's node: its parents' results in place of its references
                arguments = workflows.node_arguments(rec.client, node, arguments)
                rec.client.hset(keys.record(task_id), "args", arguments_json(arguments))  # what it ran with
                # a result its type did not declare may not fit: refused as a submit would be
                call = validation.arguments(spec.args_model, arguments)
            else:
                call = spec.args_model.model_validate(arguments)
            value = spec.func(**dict(call))
            if spec.is_async:  # on this process's event loop, cancelled on request
                value = aio.run(value, running)
            result = spec.dump_result(value, settings.max_result_bytes)
        except TaskCancelled:
            tracing.event("taskgate.cancelled")
            rec.move(scripts.cancelled(task_id, rec.owner(task_id), now=time.time(), ttl=settings.result_ttl))
            raise CancelledIgnore() from None
        except Exception as exc:
            tracing.failed(exc)
            self._failed(exc, arguments)
            raise
        finally:
            current.reset(token)
        try:
            rec.move(scripts.succeeded(task_id, rec.owner(task_id), now=time.time(), ttl=settings.result_ttl,
                                       result=orjson.dumps(result)))
        except RedisError as exc:
            log.error("task %s[%s] ran but its result could not be stored (%s); requeued",
                      self.name, task_id, exc)
            raise Reject(str(exc), requeue=True) from exc
        return result

    def _failed(self, exc: Exception, arguments: dict[str, Any]) -> None:
        """Record a failure: park a retry, dead-letter an exhausted one, or fail for good."""
        rec = records()
        settings = rec.settings
        task_id = self.request.id
        policy = self.spec.retry
        transient = policy.is_transient(exc)
        error = error_envelope(exc, retryable=transient)
        retries = self.request.retries or 0
        if transient and retries < policy.max_retries:
            due = time.time() + policy.delay(retries)
            tracing.event("taskgate.retry", {"taskgate.retry.attempt": retries + 2,
                                             "taskgate.retry.delay_seconds": policy.delay(retries)})
            if parks_delays(settings):
                message, queue_key = self._next_attempt(arguments)
                rec.run(scripts.park(task_id, rec.owner(task_id), due=due, message=message, queue=queue_key,
                                     error=orjson.dumps(error)))
                raise ParkedIgnore(repr(exc)) from None
            rec.move(scripts.retrying(task_id, rec.owner(task_id), due=due, error=orjson.dumps(error)))
            raise self.retry(exc=exc, eta=datetime.fromtimestamp(due, tz=UTC)) from None
        if transient:
            rec.run(scripts.dead(task_id, rec.owner(task_id), ttl=settings.failure_ttl, now=time.time(),
                                 error=orjson.dumps(error), arguments=arguments_json(arguments),
                                 reason="max_retries"))
        else:
            rec.move(scripts.failed(task_id, rec.owner(task_id), now=time.time(), ttl=settings.failure_ttl,
                                    error=orjson.dumps(error)))

    def _next_attempt(self, arguments: dict[str, Any]) -> tuple[bytes, str]:
        """The next attempt's message (Celery's own, with the retry count raised) and the Redis
        list it goes to: the queue and priority this attempt came from."""
        info = self.request.delivery_info or {}
        queue, priority = info.get("routing_key") or rec_queue(), info.get("priority") or 0
        headers, properties, body = build_message(self.app, self.request.id, self.name, arguments,
                                                  retries=(self.request.retries or 0) + 1,
                                                  owner=records().owners.get(self.request.id))
        headers.update(workflows.headers_of(self.request))  # a workflow's node stays one
        tracing.inject(headers)  # the next attempt continues this one's trace
        properties["priority"] = priority
        return envelope(queue, (headers, properties, body)), queue_for_priority(queue, priority)


def arguments_json(arguments: dict[str, Any]) -> bytes:
    """A task's arguments as a record keeps them (to requeue a dead letter); integers beyond
    64 bits (a message from another producer) are kept with the standard library's encoder."""
    try:
        return orjson.dumps(arguments)
    except orjson.JSONEncodeError:
        return json.dumps(arguments, default=repr).encode()


def _record_lost(rec: Records, task_id: str, name: str, state: Literal["failed", "queued"],
                 error: dict[str, Any]) -> None:
    """End or requeue the record of a task whose pool process vanished (see
    :class:`CancelAwareRequest`); in the worker's main process."""
    ttl = rec.settings.failure_ttl
    try:
        left = rec.run(scripts.lost(task_id, rec.owner(task_id), now=time.time(), ttl=ttl,
                                    error=orjson.dumps(error), state=state))
    except RedisError as exc:
        log.error("task %s[%s]: its process vanished and the record could not be updated (%s)", name,
                  task_id, exc)
        return
    log.warning("task %s[%s]: its process vanished (%s); record %s", name, task_id, error["type"], left)


def _said(exc_info: Any) -> str:
    """The message a :class:`DeadLetteredIgnore` or :class:`ParkedIgnore` carries, back from the
    pool (billiard's ExceptionInfo, its exception maybe wrapped with its traceback)."""
    exc = getattr(exc_info, "exception", None)
    if isinstance(exc, ExceptionWithTraceback):
        exc = exc.exc
    return str(exc.args[0]) if exc is not None and exc.args else ""


def rec_queue() -> str:
    """The default queue of this deployment."""
    return records().settings.default_queue


@task_revoked.connect
def _on_revoked(sender: Any = None, request: Any = None, terminated: bool = False, **_: Any) -> None:
    """A running task killed by ``cancel?terminate=true`` ends ``cancelled``."""
    if request is None or not isinstance(sender, TaskgateTask):
        return
    rec = records(settings_of(sender.app))
    rec.move(scripts.cancelled(request.id, rec.owner(request.id), now=time.time(),
                               ttl=rec.settings.result_ttl))

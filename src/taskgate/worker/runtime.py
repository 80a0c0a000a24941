"""Inside the worker: the Task base class that keeps a task's record truthful.

``TaskgateTask.__call__`` wraps every run of a declared task: it moves the record to
``started`` (or skips a task cancelled while queued, or already finished), validates the
arguments against the generated model, runs the plain function, and records the result, a
retry (with ``next_attempt_at``) or a client-safe error. Tasks call :func:`report_progress`
and :func:`cancel_requested` while they run. A task that ends ``cancelled`` is announced to
Celery's event stream as revoked (:class:`CancelAwareRequest`), so Flower shows it ended.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import orjson
from billiard.einfo import ExceptionWithTraceback  # type: ignore[import-untyped]
from billiard.exceptions import TimeLimitExceeded, WorkerLostError  # type: ignore[import-untyped]
from celery import Task
from celery.exceptions import Ignore, Reject
from celery.signals import task_revoked
from celery.worker.request import Request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from .. import connections
from ..brokers import parks_delays
from ..brokers.message import build_message, envelope, queue_for_priority
from ..config import Settings
from ..constants import ANONYMOUS, HEARTBEAT_INTERVAL, HEARTBEAT_TTL
from ..exceptions import TaskCancelled, error_envelope
from ..records import encode, keys, scripts
from ..records.scripts import Call, Scripts
from ..states import TaskState
from . import recovery
from .celery_app import settings_of

if TYPE_CHECKING:
    from ..registry import TaskSpec

log = logging.getLogger("taskgate.worker")

T = TypeVar("T")

__all__ = ["TaskgateTask", "cancel_requested", "raise_if_cancelled", "recovery", "report_progress"]

#: Seconds between two progress writes of one task (the last one is always written).
PROGRESS_INTERVAL = 0.2
#: Seconds between two reads of the cancel flag by :func:`cancel_requested`.
CANCEL_CHECK_INTERVAL = 0.25


#: Worker-side record writes ride out a Redis blip for this long before the task is requeued.
_patient = retry(
    retry=retry_if_exception_type((RedisConnectionError, RedisTimeoutError)),
    stop=stop_after_delay(30),
    wait=wait_exponential(multiplier=0.2, max=2),
    reraise=True,
)


class _Records:
    """This worker process's Redis client and scripts (made after fork, per pid)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = connections.blocking(settings.require_redis_url(), connections.WORKER_TIMEOUT)
        self.scripts = Scripts(self.client)
        self.pid = os.getpid()
        #: The owner of each task this process is running (read once, at its start).
        self.owners: dict[str, str] = {}

    def run(self, call: Call[T]) -> T:
        """Run a script call, riding out a Redis blip (a script is safe to run twice)."""
        return _patient(self.scripts)(call)

    @_patient
    def owner(self, task_id: str) -> str:
        """The owner of a task (whose in-flight set its end updates); set once, at submission."""
        if task_id not in self.owners:
            owner = cast(bytes | None, self.client.hget(keys.record(task_id), "owner"))
            return owner.decode() if owner else ANONYMOUS
        return self.owners[task_id]

    def set(self, task_id: str, ttl: int, **fields: Any) -> TaskState | None:
        """Set record fields (see :func:`~taskgate.records.encode`), give it ``ttl`` once ended
        (unless 0) and publish the change."""
        return self.run(scripts.update(task_id, self.owner(task_id), ttl, encode(**fields)))


_records: _Records | None = None


def records(settings: Settings | None = None) -> _Records:
    """The record client of this process (made on first use, from ``settings``: the worker's
    Celery app's, see :func:`~taskgate.worker.celery_app.settings_of`)."""
    global _records
    if _records is None or _records.pid != os.getpid():
        if settings is None:
            raise RuntimeError("taskgate's record client is made by the first task this process runs")
        _records = _Records(settings)
    return _records


@dataclass
class _Running:
    task_id: str
    last_progress: float = 0.0
    last_cancel_check: float = 0.0
    cancel: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


_current: contextvars.ContextVar[_Running | None] = contextvars.ContextVar("taskgate_task", default=None)


class _Pulse(threading.Thread):
    """In the process running tasks (a pool process): keeps ``taskgate:alive:{<id>}`` fresh for
    each task it runs, so the reaper never hands a running task to a second worker, even while
    the worker's main process (whose keeper heartbeats the delivery tags) is frozen. The START
    script sets the mark and the script that ends the task deletes it: no round trip of its own
    per task."""

    def __init__(self, node: str) -> None:
        super().__init__(name="taskgate-pulse", daemon=True)
        self.node = node
        self.running: set[str] = set()
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def enter(self, task_id: str) -> None:
        with self.lock:
            self.running.add(task_id)

    def leave(self, task_id: str) -> None:
        """Stop refreshing the mark (ended, it is gone; parked or requeued, it expires)."""
        with self.lock:
            self.running.discard(task_id)

    def run(self) -> None:
        while True:
            time.sleep(HEARTBEAT_INTERVAL)
            with self.lock:
                running = list(self.running)
            if not running:
                continue
            try:
                pipe = records().client.pipeline(transaction=False)
                for task_id in running:
                    pipe.set(keys.alive(task_id), self.node, ex=HEARTBEAT_TTL)
                pipe.execute()
            except RedisError as exc:
                log.warning("taskgate pulse: could not mark %d running task(s) alive (%s)", len(running), exc)


_pulse: _Pulse | None = None


def pulse(node: str) -> _Pulse:
    """This process's pulse thread (started on first use, again after a fork)."""
    global _pulse
    if _pulse is None or _pulse.pid != os.getpid():
        _pulse = _Pulse(node)
        _pulse.start()
    return _pulse


def report_progress(done: float, total: float, message: str | None = None) -> None:
    """Publish how far the running task is; shown as ``{done, total, percent, message}``.

    Cheap to call in a loop: writes at most every 0.2 s, and always when ``done >= total``.
    Outside a task it does nothing.
    """
    running = _current.get()
    if running is None:
        return
    now = time.monotonic()
    if done < total and now - running.last_progress < PROGRESS_INTERVAL:
        return
    running.last_progress = now
    percent = round(100.0 * done / total, 2) if total else 100.0
    progress = {"done": done, "total": total, "percent": percent, "message": message}
    records().set(running.task_id, 0, progress=progress)


def cancel_requested() -> bool:
    """True once someone asked to cancel the running task (checked at most every 0.25 s)."""
    running = _current.get()
    if running is None:
        return False
    now = time.monotonic()
    if not running.cancel and now - running.last_cancel_check >= CANCEL_CHECK_INTERVAL:
        running.last_cancel_check = now
        flag = records().client.hget(keys.record(running.task_id), "cancel")
        running.cancel = flag == b"1"
    return running.cancel


def raise_if_cancelled() -> None:
    """Raise :class:`TaskCancelled` if the running task was asked to stop."""
    if cancel_requested():
        raise TaskCancelled("cancelled on request")


class CancelledIgnore(Ignore):  # type: ignore[misc]
    """Raised in the worker by a task that ends ``cancelled``: asked to stop while running, or
    found cancelled at start. Celery skips it like any :class:`~celery.exceptions.Ignore`."""


class CancelAwareRequest(Request):  # type: ignore[misc]
    """The worker's main-process request of a taskgate task.

    ``Ignore`` makes Celery send no terminal task event, so a monitor would show a cancelled
    task started forever. On :class:`CancelledIgnore` this sends Celery's own ``task-revoked``
    event (the fields ``Request._announce_revoked`` sends), once: not when
    ``revoke(terminate=True)`` already announced it. ``send_event`` sends only while the worker
    sends task events (``--task-events``, or switched on by Flower).

    When the pool process running the task vanished, the task's own handlers never ran, so
    the record would say ``started`` for good. Celery's handling decides what happens to the
    message, and the record follows it: a hard ``time_limit`` (message acknowledged) ends
    ``failed`` with error type ``TimeLimitExceeded``; a process that died (a kill, the
    out-of-memory killer: ``WorkerLostError``, message requeued at the back of its queue) goes
    back to ``queued``, its error saying why, until it starts again (each start counts a
    delivery, so one that keeps killing its process is dead-lettered).
    """

    _already_revoked: bool  # Celery's: set once the request announced itself revoked

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        # exc_info is billiard's ExceptionInfo, back from the pool: .type is the raised class.
        if getattr(exc_info, "type", None) is CancelledIgnore and not self._already_revoked:
            self._already_revoked = True
            self.send_event("task-revoked", terminated=False, signum=None, expired=False)
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


class TaskgateTask(Task):  # type: ignore[misc]
    """Base class of declared tasks: records every transition of the task's life."""

    #: Celery builds each worker request of these tasks from this class.
    Request = CancelAwareRequest
    #: The declared task (set per task class by ``@taskgate.task``).
    taskgate_spec: TaskSpec

    @property
    def spec(self) -> TaskSpec:
        return self.taskgate_spec

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        if task_id is None:  # called directly, not through a worker
            return self.run(*args, **kwargs)
        rec = records(settings_of(self.app))
        settings = rec.settings
        spec = self.spec
        arguments = dict(zip(spec.args_model.model_fields, args, strict=False)) | kwargs
        try:
            owner = rec.owners[task_id] = rec.owner(task_id)
            verdict = rec.run(scripts.start(
                task_id, owner, name=spec.name, now=time.time(), ttl=settings.result_ttl,
                max_deliveries=settings.max_deliveries, node=self.request.hostname or "",
                failure_ttl=settings.failure_ttl, arguments=arguments_json(arguments)))
        except RedisError as exc:
            rec.owners.pop(task_id, None)
            log.warning("task %s[%s]: Redis unavailable (%s); requeued", self.name, task_id, exc)
            raise Reject(str(exc), requeue=True) from exc
        if verdict != "run":
            rec.owners.pop(task_id, None)
        if verdict == "dead":
            log.error("task %s[%s] dead-lettered: delivered %d times, its worker died each time",
                      self.name, task_id, settings.max_deliveries)
            raise Ignore()
        if verdict != "run":
            log.info("task %s[%s] not run: %s", self.name, task_id, verdict)
            raise CancelledIgnore() if verdict == "cancelled" else Ignore()
        beat = pulse(self.request.hostname or "")
        beat.enter(task_id)
        try:
            return self._run(task_id, arguments)
        finally:  # alive until its end is recorded: a requeued copy then finds it ended
            beat.leave(task_id)
            rec.owners.pop(task_id, None)

    def _run(self, task_id: str, arguments: dict[str, Any]) -> Any:
        """Run the started task and record how it ended."""
        rec, spec = records(), self.spec
        settings = rec.settings
        token = _current.set(_Running(task_id))
        try:
            call = spec.args_model.model_validate(arguments)
            result = spec.dump_result(spec.func(**dict(call)))
        except TaskCancelled:
            rec.set(task_id, settings.result_ttl, state=TaskState.CANCELLED, finished_at=time.time())
            raise CancelledIgnore() from None
        except Exception as exc:
            self._failed(exc, arguments)
            raise
        finally:
            _current.reset(token)
        try:
            rec.set(task_id, settings.result_ttl, state=TaskState.SUCCEEDED, finished_at=time.time(),
                    result=result)
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
            if parks_delays(settings):
                message, queue_key = self._next_attempt(arguments)
                rec.run(scripts.park(task_id, rec.owner(task_id), due=due, message=message, queue=queue_key,
                                     error=orjson.dumps(error)))
                raise Ignore() from None
            rec.set(task_id, settings.result_ttl, state=TaskState.RETRYING, next_attempt_at=due, error=error)
            raise self.retry(exc=exc, eta=datetime.fromtimestamp(due, tz=UTC)) from None
        if transient:
            rec.run(scripts.dead(task_id, rec.owner(task_id), ttl=settings.failure_ttl, now=time.time(),
                                 error=orjson.dumps(error), arguments=arguments_json(arguments),
                                 reason="max_retries"))
        else:
            rec.set(task_id, settings.failure_ttl, state=TaskState.FAILED, finished_at=time.time(),
                    error=error)

    def _next_attempt(self, arguments: dict[str, Any]) -> tuple[bytes, str]:
        """The next attempt's message (Celery's own, with the retry count raised) and the Redis
        list it goes to: the queue and priority this attempt came from."""
        info = self.request.delivery_info or {}
        queue, priority = info.get("routing_key") or rec_queue(), info.get("priority") or 0
        headers, properties, body = build_message(self.app, self.request.id, self.name, arguments,
                                                  retries=(self.request.retries or 0) + 1)
        properties["priority"] = priority
        return envelope(queue, (headers, properties, body)), queue_for_priority(queue, priority)


def arguments_json(arguments: dict[str, Any]) -> bytes:
    """A task's arguments as a record keeps them (to requeue a dead letter); integers beyond
    64 bits (a message from another producer) are kept with the standard library's encoder."""
    try:
        return orjson.dumps(arguments)
    except orjson.JSONEncodeError:
        return json.dumps(arguments, default=repr).encode()


def _record_lost(rec: _Records, task_id: str, name: str, state: Literal["failed", "queued"],
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


def rec_queue() -> str:
    """The default queue of this deployment."""
    return records().settings.default_queue


@task_revoked.connect
def _on_revoked(sender: Any = None, request: Any = None, terminated: bool = False, **_: Any) -> None:
    """A running task killed by ``cancel?terminate=true`` ends ``cancelled``."""
    if request is None or not isinstance(sender, TaskgateTask):
        return
    settings = settings_of(sender.app)
    records(settings).set(request.id, settings.result_ttl, state=TaskState.CANCELLED, finished_at=time.time())

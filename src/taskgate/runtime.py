"""Inside the worker: the Task base class that keeps a task's record truthful.

``TaskgateTask.__call__`` wraps every run of a declared task: it moves the record to
``started`` (or skips a task cancelled while queued, or already finished), validates the
arguments against the generated model, runs the plain function, and records the result, a
retry (with ``next_attempt_at``) or a client-safe error. Tasks call :func:`report_progress`
and :func:`cancel_requested` while they run.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from celery import Task
from celery.exceptions import Ignore
from celery.signals import task_revoked
from redis import Redis
from redis.commands.core import Script

from . import store
from .config import get_settings
from .constants import events_channel, task_record_key
from .exceptions import TaskCancelled, error_envelope
from .registry import TaskSpec, by_celery_name

log = logging.getLogger("taskgate.worker")

#: Seconds between two progress writes of one task (the last one is always written).
PROGRESS_INTERVAL = 0.2
#: Seconds between two reads of the cancel flag by :func:`cancel_requested`.
CANCEL_CHECK_INTERVAL = 0.25


class _Records:
    """This worker process's Redis client and scripts (made after fork, per pid)."""

    def __init__(self) -> None:
        settings = get_settings()
        self.settings = settings
        self.client = Redis.from_url(settings.require_redis_url(), socket_timeout=10,
                                     socket_connect_timeout=10)
        self.start: Script = self.client.register_script(store.START)
        self.update: Script = self.client.register_script(store.UPDATE)
        self.pid = os.getpid()

    def set(self, task_id: str, ttl: int, **fields: Any) -> Any:
        pairs: list[Any] = []
        for key, value in fields.items():
            pairs += [key, value]
        return self.update(keys=[task_record_key(task_id), events_channel(task_id)], args=[ttl, *pairs])


_records: _Records | None = None


def records() -> _Records:
    """The record client of this process."""
    global _records
    if _records is None or _records.pid != os.getpid():
        _records = _Records()
    return _records


@dataclass
class _Running:
    task_id: str
    last_progress: float = 0.0
    last_cancel_check: float = 0.0
    cancel: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


_current: contextvars.ContextVar[_Running | None] = contextvars.ContextVar("taskgate_task", default=None)


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
    records().set(running.task_id, 0, progress=orjson.dumps(progress))


def cancel_requested() -> bool:
    """True once someone asked to cancel the running task (checked at most every 0.25 s)."""
    running = _current.get()
    if running is None:
        return False
    now = time.monotonic()
    if not running.cancel and now - running.last_cancel_check >= CANCEL_CHECK_INTERVAL:
        running.last_cancel_check = now
        flag = records().client.hget(task_record_key(running.task_id), "cancel")
        running.cancel = flag == b"1"
    return running.cancel


def raise_if_cancelled() -> None:
    """Raise :class:`TaskCancelled` if the running task was asked to stop."""
    if cancel_requested():
        raise TaskCancelled("cancelled on request")


class TaskgateTask(Task):  # type: ignore[misc]
    """Base class of declared tasks: records every transition of the task's life."""

    @property
    def spec(self) -> TaskSpec:
        spec = by_celery_name(self.name)
        assert spec is not None, f"{self.name} is not a declared taskgate task"
        return spec

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        task_id = self.request.id
        if task_id is None:  # called directly, not through a worker
            return self.run(*args, **kwargs)
        rec = records()
        settings = rec.settings
        now = time.time()
        verdict = rec.start(keys=[task_record_key(task_id), events_channel(task_id)],
                            args=[self.spec.name, now, settings.result_ttl])
        if verdict != b"run":
            log.info("task %s[%s] not run: %s", self.name, task_id, verdict.decode())
            raise Ignore()
        spec = self.spec
        token = _current.set(_Running(task_id))
        try:
            call = spec.args_model.model_validate(dict(zip(spec.args_model.model_fields, args, strict=False))
                                                  | kwargs)
            result = spec.dump_result(spec.func(**dict(call)))
        except TaskCancelled:
            rec.set(task_id, settings.result_ttl, state="cancelled", finished_at=time.time())
            raise Ignore() from None
        except Exception as exc:
            policy = spec.retry
            if policy.is_transient(exc) and self.request.retries < policy.max_retries:
                delay = policy.delay(self.request.retries)
                rec.set(task_id, settings.result_ttl, state="retrying", next_attempt_at=time.time() + delay,
                        error=orjson.dumps(error_envelope(exc, retryable=True)))
                raise self.retry(exc=exc, countdown=delay) from None
            rec.set(task_id, settings.failure_ttl, state="failed", finished_at=time.time(),
                    error=orjson.dumps(error_envelope(exc, retryable=policy.is_transient(exc))))
            raise
        finally:
            _current.reset(token)
        rec.set(task_id, settings.result_ttl, state="succeeded", finished_at=time.time(),
                result=orjson.dumps(result))
        return result


@task_revoked.connect
def _on_revoked(request: Any = None, terminated: bool = False, **_: Any) -> None:
    """A running task killed by ``cancel?terminate=true`` ends ``cancelled``."""
    if request is None or by_celery_name(getattr(request, "task", "") or "") is None:
        return
    settings = get_settings()
    records().set(request.id, settings.result_ttl, state="cancelled", finished_at=time.time())

"""The worker's consumer: messages it cannot run end truthfully instead of vanishing.

* **Not JSON.** Celery already refuses content types outside ``accept_content`` (JSON only
  here): it logs and acknowledges the message, and the task is never run. This consumer also
  marks the task's record ``failed`` (``ContentDisallowed``), so its sender sees a truthful end
  instead of an eternal ``queued``.
* **A task this worker does not know** (its module is missing from the worker's
  ``TASKGATE_TASK_MODULES``). Celery would log "Received unregistered task" and drop the
  message. This consumer holds it :data:`UNKNOWN_HOLD` to 1.5 times that many seconds, then
  hands it back to the queue (kombu requeues it at the back), for a worker that knows the task:
  a worker lacking a task sees each such message at most once per hold, so several of them
  never spin. The hold is drawn at random: kombu's Redis consumers re-block every second and
  Redis hands a pushed message to the longest-blocked one, so a fixed hold would fall at the
  same point of the lacking worker's cycle at every hand-back and the race for the message
  need not be fair (one CI run saw a task still queued 30 s after a knowing worker started). The
  record stays ``queued`` and remembers when a worker first lacked the task; once
  ``TASKGATE_UNREGISTERED_TIMEOUT`` seconds (default 300) have passed with no live worker
  listing the task in its heartbeat, the task ends ``failed`` with error type
  ``UnregisteredTask`` (naming the worker and the module the API declares it in) and joins the
  dead letters, from where it can be requeued once a worker has the module. Messages without a
  taskgate record (sent by another producer) keep Celery's handling.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, cast

import orjson
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.exceptions import ContentDisallowed
from redis import Redis
from redis.exceptions import RedisError

from ..records import keys, scripts
from ..records.workers import heartbeats, parse_entry
from .celery_app import settings_of
from .running import records

log = logging.getLogger("taskgate.worker")

#: Seconds a worker holds a message of a task it does not know before handing it back (at
#: least; up to 1.5 times as long, drawn at random).
UNKNOWN_HOLD = 2.0


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, reporting refused messages in the task's record."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        super().on_decode_error(message, exc)
        self._refused(message)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        super().on_invalid_task(body, message, exc)
        if isinstance(exc, ContentDisallowed):
            self._refused(message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        headers = message.headers or {}
        task_id, name = headers.get("id"), headers.get("task")
        if not (isinstance(task_id, str) and isinstance(name, str)):
            super().on_unknown_task(body, message, exc)
            return
        try:
            verdict = self._unknown(task_id, name, message)
        except RedisError as error:  # cannot tell: keep the message, try again after the hold
            log.warning("task %s[%s] is not registered here and Redis is unavailable (%s)", name, task_id,
                        error)
            verdict = "hold"
        if verdict == "foreign":
            super().on_unknown_task(body, message, exc)
        elif verdict == "hold":
            hold = UNKNOWN_HOLD * random.uniform(1.0, 1.5)  # noqa: S311 (timing, not security)
            self.timer.call_after(hold, self._hand_back, (message, name, task_id))
        else:
            message.ack()

    def _unknown(self, task_id: str, name: str, message: Any) -> str:
        """What to do with a message of an unregistered task: 'foreign' (no taskgate record),
        'hold' (hand it back later), 'failed' (recorded as such now) or 'ended' (already over)."""

        rec = records(settings_of(self.app))
        now = time.time()
        found = rec.run(scripts.unknown(task_id, now))
        if found is None:
            return "foreign"
        state, since = found
        if state is not None and state.is_terminal:
            return "ended"
        timeout = rec.settings.unregistered_timeout
        queue = (message.delivery_info or {}).get("routing_key") or rec.settings.default_queue
        elsewhere = known_by(rec.client, name, queue)
        if elsewhere or now - since < timeout:
            log.warning("task %s[%s] is not registered on this worker%s; handing it back in %.0f-%.0f s",
                        name, task_id, f" (known by {', '.join(elsewhere)})" if elsewhere
                        else f" nor on any live worker (failing after {timeout} s)", UNKNOWN_HOLD,
                        UNKNOWN_HOLD * 1.5)
            return "hold"
        declared = parse_entry(cast(bytes | None, rec.client.hget(keys.CATALOGUE, name)))
        where = f"module {declared['module']}" if declared else "the module declaring it"
        error = {"type": "UnregisteredTask", "retryable": False,
                 "message": f"no live worker has the task {name.removeprefix('taskgate.')!r}: worker "
                            f"{self.hostname} received it without it, and none did for {timeout} s; load "
                            f"{where} on the workers (TASKGATE_TASK_MODULES), then requeue it from the "
                            "dead letters (POST /dead-letters/{id}/requeue)"}
        arguments = _kwargs(message)
        rec.run(scripts.dead(task_id, rec.owner(task_id), ttl=rec.settings.failure_ttl, now=now,
                             error=orjson.dumps(error), arguments=orjson.dumps(arguments),
                             reason="unregistered"))
        log.error("task %s[%s] failed: %s", name, task_id, error["message"])
        return "failed"

    def _hand_back(self, message: Any, name: str, task_id: str) -> None:
        try:
            message.reject(requeue=True)
        except Exception as exc:  # the broker went away: the reaper requeues what we still held
            log.warning("could not hand back task %s[%s] (%s); it is requeued once this worker is gone",
                        name, task_id, exc)

    def _refused(self, message: Any) -> None:
        task_id = (message.headers or {}).get("id")
        if not isinstance(task_id, str):
            return

        rec = records(settings_of(self.app))
        error = {"type": "ContentDisallowed", "retryable": False,
                 "message": f"message refused: content type {message.content_type!r} is not accepted "
                            "(JSON only); the task was not run"}
        # A no-op when taskgate has no record of the task (a message from another producer).
        rec.move(scripts.refused(task_id, rec.owner(task_id), now=time.time(), ttl=rec.settings.failure_ttl,
                                 error=orjson.dumps(error)))


def _kwargs(message: Any) -> dict[str, Any]:
    """The keyword arguments of a protocol-2 message (taskgate sends keyword arguments only)."""
    try:
        _args, kwargs, _embed = message.decode()
        return dict(kwargs)
    except Exception:  # not decodable as protocol 2: keep nothing rather than fail
        return {}


def known_by(client: Redis, celery_name: str, queue: str) -> list[str]:
    """The live workers (from their heartbeats) consuming ``queue`` that have ``celery_name``."""
    beats = heartbeats(client)
    return sorted(worker for worker, beat in beats.items()
                  if celery_name in beat.tasks and queue in beat.queues)

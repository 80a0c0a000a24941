"""The worker's consumer: a message that is not JSON is refused, and its task says so.

Celery already refuses content types outside ``accept_content`` (JSON only here): it logs and
acknowledges the message, and the task is never run. This consumer also marks the task's
record ``failed`` (``ContentDisallowed``), so its sender sees a truthful end instead of an
eternal ``queued``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.exceptions import ContentDisallowed


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, reporting refused messages in the task's record."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        super().on_decode_error(message, exc)
        self._refused(message)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        super().on_invalid_task(body, message, exc)
        if isinstance(exc, ContentDisallowed):
            self._refused(message)

    def _refused(self, message: Any) -> None:
        task_id = (message.headers or {}).get("id")
        if not isinstance(task_id, str):
            return
        from .runtime import records

        rec = records()
        error = {"type": "ContentDisallowed", "retryable": False,
                 "message": f"message refused: content type {message.content_type!r} is not accepted "
                            "(JSON only); the task was not run"}
        # A no-op when taskgate has no record of the task (a message from another producer).
        rec.set(task_id, rec.settings.failure_ttl, state="failed", finished_at=time.time(),
                error=orjson.dumps(error))

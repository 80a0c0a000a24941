"""Celery's protocol-2 message, as taskgate builds it: once per task from Celery's own builder
(:class:`MessageTemplate`), then filled in per call; and the JSON envelope kombu's Redis
transport stores (:func:`envelope`). An unmodified ``celery worker`` consumes both."""

from __future__ import annotations

import base64
import bisect
import os
import reprlib
import socket
import uuid
from datetime import datetime
from typing import Any

import orjson
from celery import Celery

#: Celery's message parts: headers, properties, body (args, kwargs, embed).
MessageParts = tuple[dict[str, Any], dict[str, Any], tuple[Any, ...]]


#: kombu's Redis transport keeps one list per priority step: ``queue`` for 0-2,
#: ``queue\x06\x163`` for 3-5, and so on (lower number = higher priority).
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"


def queue_for_priority(queue: str, priority: int) -> str:
    """The Redis list kombu's transport uses for ``queue`` at ``priority``."""
    step = PRIORITY_STEPS[bisect.bisect(PRIORITY_STEPS, priority) - 1]
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


#: A header taskgate adds: the owner of the task (its API key's owner), so the worker starts it
#: with the owner's in-flight set without reading the record first. The start script checks it
#: against the record (a message from elsewhere may lack it, or be wrong). Celery passes unknown
#: headers through to ``task.request``; other consumers ignore it.
OWNER_HEADER = "taskgate_owner"

#: Headers a workflow node's message carries (``producer.workflows`` sets them, the worker's
#: ``worker.workflows`` reads them): its workflow, its node and, for a run of a map node, the
#: index of its item.
WORKFLOW_HEADER = "taskgate_workflow"
NODE_HEADER = "taskgate_node"
ITEM_HEADER = "taskgate_item"

#: The ``origin`` header of every message this process sends (Celery computes it per call).
ORIGIN = f"taskgate@{socket.gethostname()}:{os.getpid()}"


def build_message(app: Celery, task_id: str, name: str, kwargs: dict[str, Any], *,
                  countdown: float | None = None, eta: datetime | None = None,
                  retries: int = 0, owner: str | None = None) -> MessageParts:
    """Celery's own protocol-2 parts for one task call (``app.amqp.as_task_v2``), plus
    :data:`OWNER_HEADER` when ``owner`` is given.

    ``ignore_result``: taskgate's tasks keep their result in taskgate's record, so Celery's
    result backend stores nothing for them, failures included.
    """
    message = app.amqp.as_task_v2(task_id, name, (), kwargs, countdown=countdown, eta=eta,
                                  retries=retries, ignore_result=True, origin=ORIGIN, argsrepr="()",
                                  kwargsrepr=reprlib.repr(kwargs))
    headers = message.headers if owner is None else {**message.headers, OWNER_HEADER: owner}
    return headers, message.properties, message.body


class MessageTemplate:
    """One task's protocol-2 message, built once by Celery (:func:`build_message`) and filled in
    per call: only the task id, the kwargs and their repr change between two submissions of a
    task sent now (a delay goes through :func:`build_message` itself)."""

    _PROBE = "\x00taskgate-probe\x00"

    def __init__(self, app: Celery, name: str) -> None:
        headers, properties, body = build_message(app, self._PROBE, name, {})
        self.headers = {key: value for key, value in headers.items() if value != self._PROBE}
        self.id_headers = tuple(key for key, value in headers.items() if value == self._PROBE)
        self.properties = {key: value for key, value in properties.items() if value != self._PROBE}
        self.id_properties = tuple(key for key, value in properties.items() if value == self._PROBE)
        self.embed = body[2]

    def parts(self, task_id: str, kwargs: dict[str, Any], priority: int = 0,
              owner: str | None = None) -> MessageParts:
        """The message for one call: what :func:`build_message` would return, plus ``priority``."""
        headers = {**self.headers, "kwargsrepr": reprlib.repr(kwargs)}
        if owner is not None:
            headers[OWNER_HEADER] = owner
        for key in self.id_headers:
            headers[key] = task_id
        properties = {**self.properties, "priority": priority}
        for key in self.id_properties:
            properties[key] = task_id
        return headers, properties, ((), kwargs, self.embed)


def envelope(queue: str, parts: MessageParts, delivery_tag: str | None = None) -> bytes:
    """The JSON envelope kombu's Redis transport stores in the queue list. The delivery tag
    must be unique among live messages (kombu's own is a fresh uuid4)."""
    headers, properties, body = parts
    payload = orjson.dumps(body)
    return orjson.dumps({
        "body": base64.b64encode(payload).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": properties.get("priority", 0),
            "body_encoding": "base64",
            "delivery_tag": delivery_tag or str(uuid.uuid4()),
        },
    })

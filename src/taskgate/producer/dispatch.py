"""The one way into the queue.

Every path that sends a new run (submit, batch, replay, a dead letter's requeue, a schedule's
run now and its tick) builds its Celery message here (:meth:`Dispatcher.message`) and hands it,
with its lane and its task's declared limits (:meth:`Dispatcher.enqueue`), to one step in Lua
(a retry's message, carrying its retry count, is built by the worker's runtime and meets the
same step when its delay is released): ``admission.lua``'s ``dispatch``, inside the submit,
fire, requeue and release scripts. It pushes the message to its queue at once, or keeps the
run waiting in taskgate's Redis until its limits let it go (``records/scripts/admission.lua``).

When the broker is not the records' Redis the scripts cannot push: the caller publishes a run
the script let go (``Broker.publish``, or ``brokers.kombu.publish_blocking`` from a keeper), and
a run that waited is published by a worker's keeper from the outbox
(``worker.admission.Admitter.publish_outbox``, reading :func:`outbox_parts`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson
from celery import Celery

from .. import limits, tracing
from ..brokers.message import MessageParts, MessageTemplate, build_message, envelope, queue_for_priority
from ..records import scripts
from ..registry import TaskSpec


@dataclass(frozen=True, slots=True)
class Message:
    """One run's Celery message: its parts, its Celery queue, and what a script pushes."""

    task_id: str
    queue: str
    parts: MessageParts
    #: The Redis list a script pushes to; None when the broker is elsewhere.
    list_key: str | None
    #: What a script pushes (the kombu envelope), or, when the broker is elsewhere, the parts'
    #: JSON, kept in the record while the run waits for its limits (the outbox publishes it).
    payload: bytes


class Dispatcher:
    """Builds every run's message (one template per task) and its script input."""

    def __init__(self, app: Celery, *, inline: bool) -> None:
        self.app = app
        #: True when the broker is the records' Redis: scripts push the messages themselves.
        self.inline = inline
        self._templates: dict[str, MessageTemplate] = {}

    def template(self, celery_name: str) -> MessageTemplate:
        """Task ``celery_name``'s message, built once by Celery (on first use for a task declared
        after startup) and filled in per run."""
        template = self._templates.get(celery_name)
        if template is None:
            template = self._templates[celery_name] = MessageTemplate(self.app, celery_name)
        return template

    def message(self, celery_name: str, task_id: str, kwargs: dict[str, Any], *, queue: str, owner: str,
                priority: int = 0, eta: float | None = None, delivery_tag: str | None = None,
                headers: Mapping[str, str] | None = None) -> Message:
        """The message of one run of task ``celery_name`` on ``queue``; ``eta`` (epoch
        seconds): Celery's own delay, for a broker that is not inline (an inline one parks
        delayed runs in taskgate's delayed set instead); ``headers``: taskgate's own, added
        (a workflow node's). The current trace context (the run's submit span, see
        :func:`taskgate.tracing.producer_span`) goes in its headers too."""
        if eta is None:
            parts = self.template(celery_name).parts(task_id, kwargs, priority, owner)
        else:
            built, properties, body = build_message(self.app, task_id, celery_name, kwargs,
                                                    eta=datetime.fromtimestamp(eta, tz=UTC), owner=owner)
            parts = (built, {**properties, "priority": priority}, body)
        if headers:
            parts = ({**parts[0], **headers}, parts[1], parts[2])
        tracing.inject(parts[0])  # a dict of this message's own
        if self.inline:
            return Message(task_id, queue, parts, queue_for_priority(queue, priority),
                           envelope(queue, parts, delivery_tag))
        return Message(task_id, queue, parts, None, orjson.dumps([queue, parts]))

    def enqueue(self, message: Message, name: str, spec: TaskSpec | None, kwargs: dict[str, Any],
                run: scripts.Enqueue) -> scripts.Enqueue:
        """``run`` (its own fields filled in) carrying ``message``, the run's lane and the
        declared limits of its task (``spec``; None when this process does not have the task:
        the scripts then use the limits stored by those that do)."""
        limited = spec is not None and (spec.rate is not None or spec.concurrency is not None)
        return replace(run, task_id=message.task_id, name=name, message=message.payload,
                       queue=message.list_key,
                       lane=limits.lane_of(spec, run.owner, kwargs) if spec is not None and limited else "",
                       declared=limits.declared_json(spec) if spec is not None else scripts.STORED_LIMITS)


def outbox_parts(payload: bytes) -> tuple[str, MessageParts]:
    """The queue and message parts a waiting run's record keeps for the outbox."""
    queue, (headers, properties, body) = orjson.loads(payload)
    return queue, (headers, properties, tuple(body))


def schedule_link(schedule_id: str, traceparent: str | None) -> tracing.Link | None:
    """What a schedule's run links to (a tick's, starting a trace of its own; a run now's): the
    span that created the schedule (``traceparent``, kept in its hash when it was created
    traced), else a trace id of its own made from its id (a schedule declared in code, or made
    untraced), the same for every run of it; either way the link says
    ``taskgate.schedule.id``. None while tracing is off."""
    if not tracing.active():
        return None
    named = {"taskgate.schedule.id": schedule_id}
    created = tracing.link_to(traceparent, named) if traceparent else None
    return created or tracing.link(schedule_trace_id(schedule_id), attributes=named)


def schedule_trace_id(schedule_id: str) -> str:
    """The trace id a schedule without a creating span stands for (32 hex digits)."""
    return hashlib.sha256(f"taskgate schedule {schedule_id}".encode()).hexdigest()[:32]

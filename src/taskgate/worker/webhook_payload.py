"""What a webhook delivery sends: its body and its Standard Webhooks headers.

The body is ``{"type", "timestamp", "data"}``: ``type`` the event (``task.succeeded``, ...),
``timestamp`` when it happened (ISO 8601), ``data`` for a run's end the task as
``GET /tasks/{task_id}`` shows it, for a workflow's end its summary as ``GET /workflows`` lists
it, for ``webhook.test`` what the test stored.

:func:`task_data` writes the API's own view, :class:`~taskgate.producer.task_view.TaskInfo`
(pydantic only: the workers never import FastAPI), as the API writes it. The headers are signed
with the ``standardwebhooks`` library: ``webhook-signature`` holds a ``v1,`` signature per secret
(the previous one too while it is still valid after a rotation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook

from .. import __version__
from ..producer.task_view import TaskInfo
from ..records import decode_event
from ..records.model import TaskRecord
from ..records.webhooks import Delivery
from ..records.workflows import SUMMARY_FIELDS, decode_summary

USER_AGENT = f"taskgate/{__version__}"


def task_data(record: TaskRecord) -> orjson.Fragment:
    """The task as ``GET /tasks/{task_id}`` answers (``TaskInfo``, untyped result): the same
    model, written by pydantic as FastAPI writes that route's answer."""
    return orjson.Fragment(TaskInfo.from_record(record).model_dump_json())


def task_id_of(msg_id: str) -> str:
    """The task id in a run's ``webhook-id`` (``msg_<task id>_<state>``; no state has a ``_``)."""
    return msg_id.removeprefix("msg_").rpartition("_")[0]


def trace_of(delivery: Delivery) -> str | None:
    """The trace the run a ``task.*`` delivery tells of belongs to (its record's ``trace_id``),
    None for other events or a run submitted untraced."""
    found = delivery.payload.get("trace_id") if delivery.type.startswith("task.") else None
    return found if isinstance(found, str) and found else None


def workflow_span_of(delivery: Delivery) -> str | None:
    """The span of the submit of the workflow a ``workflow.*`` delivery tells of (the W3C
    ``traceparent`` its hash kept, which the end script adds to the payload; not sent), None
    for other events or a workflow submitted untraced."""
    found = delivery.payload.get("traceparent") if delivery.type.startswith("workflow.") else None
    return found if isinstance(found, str) and found else None


def data_of(delivery: Delivery) -> Any:
    """The ``data`` of ``delivery``'s body (see the module's docstring)."""
    family = delivery.type.partition(".")[0]
    if family == "task":
        record = decode_event(task_id_of(delivery.msg_id), orjson.dumps(delivery.payload))
        return task_data(record)
    if family == "workflow":
        workflow_id = str(delivery.payload.get("workflow_id", ""))
        summary = decode_summary(workflow_id, [delivery.payload.get(name) for name in SUMMARY_FIELDS])
        if summary is not None:
            return dataclasses.asdict(summary)
    return delivery.payload


def body(delivery: Delivery) -> bytes:
    """The JSON body of every attempt of ``delivery`` (the same bytes each time)."""
    happened = delivery.created_at or datetime.now(UTC)
    return orjson.dumps({"type": delivery.type, "timestamp": happened, "data": data_of(delivery)},
                        option=orjson.OPT_UTC_Z)


def headers(msg_id: str, at: float, content: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The Standard Webhooks headers of an attempt at ``at`` (epoch s) sending ``content``,
    signed with each of ``secrets`` (``whsec_...``)."""
    when = datetime.fromtimestamp(int(at), UTC)
    text = content.decode()  # standardwebhooks before 1.3 signs str only
    signatures = " ".join(Webhook(secret).sign(msg_id, when, text) for secret in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(at)), "webhook-signature": signatures,
            "content-type": "application/json", "user-agent": USER_AGENT}

"""What a webhook delivery sends: its body and its Standard Webhooks headers.

The body is ``{"type", "timestamp", "data"}``: ``type`` the event (``task.succeeded``, ...),
``timestamp`` when it happened (ISO 8601), ``data`` for a run's end the task as
``GET /tasks/{task_id}`` shows it (the API's ``TaskInfo``), for a workflow's end its summary as
``GET /workflows`` lists it, for ``webhook.test`` what the test stored.

:func:`task_data` builds the ``TaskInfo`` JSON without the API's models: the workers never
import FastAPI (a test checks that the two agree, field by field). The headers are signed with
the ``standardwebhooks`` library: ``webhook-signature`` holds a ``v1,`` signature per secret
(the previous one too while it is still valid after a rotation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from standardwebhooks.webhooks import Webhook

from .. import __version__
from ..records import decode_event
from ..records.model import TaskRecord
from ..records.webhooks import Delivery
from ..records.workflows import SUMMARY_FIELDS, decode_summary
from ..states import TaskState

USER_AGENT = f"taskgate/{__version__}"


def _error(stored: Any) -> dict[str, Any] | None:
    """A record's ``error`` as ``TaskInfo.error`` (an ``ErrorBody``), None when it is not one."""
    if not isinstance(stored, dict):
        return None
    kind, message, retryable = stored.get("type"), stored.get("message"), stored.get("retryable")
    if not (isinstance(kind, str) and isinstance(message, str) and isinstance(retryable, bool)):
        return None
    return {"type": kind, "message": message, "retryable": retryable}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _progress(stored: Any) -> dict[str, Any] | None:
    """A record's ``progress`` as ``TaskInfo.progress``, None when it is not one."""
    if not isinstance(stored, dict):
        return None
    done, total, percent, message = (stored.get(name) for name in ("done", "total", "percent", "message"))
    if not (_number(done) and _number(total) and _number(percent)) or not isinstance(message, str | None):
        return None
    return {"done": done, "total": total, "percent": float(cast(float, percent)), "message": message}


def task_data(record: TaskRecord) -> dict[str, Any]:
    """The task as ``GET /tasks/{task_id}`` answers (``TaskInfo``, untyped result), in its field
    order; times stay datetimes (:func:`body` writes them as the API does)."""
    timeline = [{"state": change.state.value, "at": change.at, "attempt": change.attempt,
                 "worker": change.worker} for change in record.timeline]
    return {
        "task_id": record.task_id, "name": record.name or "", "owner": record.owner,
        "state": (record.state or TaskState.QUEUED).value, "waiting_for": record.waiting_for,
        "result": record.result, "error": _error(record.error), "progress": _progress(record.progress),
        "attempts": record.attempts, "deliveries": record.deliveries, "worker": record.worker,
        "created_at": record.created_at, "started_at": record.started_at, "finished_at": record.finished_at,
        "next_attempt_at": record.next_attempt_at, "cancel_requested_at": record.cancel_requested_at,
        "arguments": record.args if isinstance(record.args, dict) else None, "expires_at": record.expires_at,
        "replay_of": record.replay_of, "schedule_id": record.schedule_id, "workflow_id": record.workflow_id,
        "node": record.node, "item": record.item, "skipped": record.skipped, "tick": record.tick,
        "trace_id": record.trace_id, "seq": record.seq, "timeline": timeline or None,
    }


def task_id_of(msg_id: str) -> str:
    """The task id in a run's ``webhook-id`` (``msg_<task id>_<state>``; no state has a ``_``)."""
    return msg_id.removeprefix("msg_").rpartition("_")[0]


def trace_of(delivery: Delivery) -> str | None:
    """The trace the run a ``task.*`` delivery tells of belongs to (its record's ``trace_id``),
    None for other events or a run submitted untraced."""
    found = delivery.payload.get("trace_id") if delivery.type.startswith("task.") else None
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

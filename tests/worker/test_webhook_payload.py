"""A delivery's body and headers (``worker/webhook_payload.py``): the task as the API's
``TaskInfo`` shows it, built without FastAPI; signatures a ``standardwebhooks`` receiver accepts."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from taskgate.api.schemas import TaskInfo
from taskgate.records import decode_event, webhooks
from taskgate.records.webhooks import Delivery
from taskgate.worker import webhook_payload

from ..helpers import OUTSIDE

NOW = round(time.time() * 1000)

#: Records as the end script publishes them (every value a string), from bare to full, and with
#: fields in forms the API leaves out (an error that is no error envelope, a malformed progress).
RECORDS: list[dict[str, Any]] = [
    {"name": "add", "state": "succeeded"},
    {"name": "add", "state": "succeeded", "owner": "alice", "created_at": str(NOW - 3000),
     "started_at": str(NOW - 2000), "finished_at": str(NOW - 1), "attempts": "1", "seq": "4",
     "worker": "celery@a", "result": '{"sum": 3, "parts": [1, 2.5]}', "args": '{"x": 1, "y": 2}',
     "progress": '{"done": 3, "total": 4, "percent": 75, "message": "almost"}',
     "timeline": orjson.dumps([{"state": "queued", "at": NOW - 3000, "attempt": 0},
                               {"state": "started", "at": NOW - 2000, "attempt": 1, "worker": "celery@a"},
                               {"state": "succeeded", "at": NOW - 1, "attempt": 1}]).decode(),
     "schedule_id": "sch_1", "tick": str(NOW - 5000), "workflow_id": "wf_1", "node": "n", "item": "2",
     "replay_of": "t0", "expires_at": str(NOW + 60_000), "cancel_requested_at": str(NOW - 500),
     "trace_id": "0af7651916cd43dd8448eb211c80319c"},
    {"name": "boom", "state": "failed", "deliveries": "2", "dead_reason": "retries",
     "error": '{"type": "ValueError", "message": "no", "retryable": false, "extra": 1}',
     "next_attempt_at": "1700000000.25", "waiting_for": "slot"},
    {"name": "odd", "state": "cancelled", "error": '"just text"', "progress": '{"done": "x"}',
     "skipped": "a parent failed", "args": "[1, 2]", "message": "internal", "queue": "celery"},
]


@pytest.mark.parametrize("stored", RECORDS)
def test_task_data_is_the_api_s_task_info(stored: dict[str, Any]) -> None:
    record = decode_event("t1", orjson.dumps(stored))
    ours = orjson.loads(orjson.dumps(webhook_payload.task_data(record), option=orjson.OPT_UTC_Z))
    assert ours == TaskInfo.from_record(record).model_dump(mode="json")
    assert list(ours) == list(TaskInfo.model_fields)


def delivery(kind: str, msg_id: str, payload: dict[str, Any]) -> Delivery:
    return Delivery("wh_1:" + msg_id, "wh_1", msg_id, kind, payload,
                    created_at=datetime(2026, 12, 7, 8, 0, 1, 250000, tzinfo=UTC))


def test_a_run_s_body() -> None:
    body = orjson.loads(webhook_payload.body(delivery("task.failed", "msg_t_1_failed", RECORDS[2])))
    assert body["type"] == "task.failed" and body["timestamp"] == "2026-12-07T08:00:01.250000Z"
    assert body["data"]["task_id"] == "t_1" and body["data"]["error"]["type"] == "ValueError"


def test_a_workflow_s_body_is_its_summary() -> None:
    summary = {"workflow_id": "wf_9", "name": "etl", "state": "failed", "created_at": str(NOW),
               "finished_at": str(NOW + 1500), "nodes": "3", "left": "0", "failed": "1"}
    data = orjson.loads(webhook_payload.body(delivery("workflow.failed", "msg_wf_9_failed", summary)))["data"]
    assert data["workflow_id"] == "wf_9" and data["state"] == "failed" and data["owner"] is None
    assert (data["nodes"], data["left"], data["failed"]) == (3, 0, 1)
    assert data["finished_at"].endswith("Z")


def test_signed_with_every_secret_given() -> None:
    old, new = webhooks.new_secret(), webhooks.new_secret()
    content = webhook_payload.body(delivery("task.succeeded", "msg_t_succeeded", RECORDS[1]))
    headers = webhook_payload.headers("msg_t_succeeded", time.time(), content, [new, old])
    for secret in (new, old):
        assert Webhook(secret).verify(content, headers) == orjson.loads(content)
    assert headers["webhook-id"] == "msg_t_succeeded" and headers["content-type"] == "application/json"


def test_the_worker_does_not_import_fastapi() -> None:
    check = ("import sys, taskgate.worker.celery_app, taskgate.worker.recovery, taskgate.worker.webhooks; "
             "sys.exit('fastapi' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", check], cwd=OUTSIDE, timeout=60).returncode == 0

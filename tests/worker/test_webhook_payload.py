"""A delivery's body and headers (``worker/webhook_payload.py``): a run's ``data`` byte for byte
what ``GET /tasks/{task_id}`` answers (both write ``producer.task_view.TaskInfo``), without
FastAPI in the worker; signatures a ``standardwebhooks`` receiver accepts."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from redis import Redis
from standardwebhooks.webhooks import Webhook

from taskgate.producer.task_view import TaskInfo
from taskgate.records import decode_event, keys, webhooks
from taskgate.records.webhooks import Delivery
from taskgate.worker import webhook_payload

from ..helpers import OUTSIDE, submit, wait

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


def delivery(kind: str, msg_id: str, payload: dict[str, Any]) -> Delivery:
    return Delivery("wh_1:" + msg_id, "wh_1", msg_id, kind, payload,
                    created_at=datetime(2026, 12, 7, 8, 0, 1, 250000, tzinfo=UTC))


def test_a_run_s_data_is_the_task_as_get_tasks_answers_byte_for_byte(client: httpx.Client,
                                                                       redis_url: str) -> None:
    """Runs of the session worker, read back from their records as the end script publishes them:
    each body's ``data`` is the very bytes of ``GET /tasks/{task_id}`` (result, arguments,
    timeline; an error; progress)."""
    ended = [submit(client, "add", {"x": 2, "y": 3}), submit(client, "boom", {"message": "no \u00e9"}),
             submit(client, "sleepy", {"seconds": 0.3})]
    redis = Redis.from_url(redis_url)
    try:
        for task_id in ended:
            shown = wait(client, task_id)
            assert shown["state"] in ("succeeded", "failed"), shown
            answered = client.get(f"/tasks/{task_id}")
            assert answered.status_code == 200
            stored = {key.decode(): value.decode() for key, value in redis.hgetall(keys.record(task_id)).items()}
            msg_id = webhooks.task_msg_id(task_id, shown["state"])
            sent = webhook_payload.body(delivery(f"task.{shown['state']}", msg_id, stored))
            assert sent == (b'{"type":"task.' + shown["state"].encode() + b'","timestamp":'
                            b'"2026-12-07T08:00:01.250000Z","data":' + answered.content + b"}")
    finally:
        redis.close()


@pytest.mark.parametrize("stored", RECORDS)
def test_a_run_s_data_is_task_info_even_for_unreadable_fields(stored: dict[str, Any]) -> None:
    data = orjson.loads(webhook_payload.body(delivery("task.failed", "msg_t1_failed", stored)))["data"]
    assert data == TaskInfo.from_record(decode_event("t1", orjson.dumps(stored))).model_dump(mode="json")


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
    check = ("import sys, taskgate.worker.celery_app, taskgate.worker.recovery, taskgate.worker.webhooks, "
             "taskgate.worker.webhook_process; sys.exit('fastapi' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", check], cwd=OUTSIDE, timeout=60).returncode == 0

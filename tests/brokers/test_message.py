"""The submit path's message template is Celery's own message, field for field."""

from __future__ import annotations

import base64
import json

import pytest

from taskgate.brokers.message import MessageTemplate, build_message, envelope
from taskgate.config import Settings
from taskgate.worker.celery_app import create_celery_app


@pytest.mark.parametrize("kwargs", [{}, {"x": 1, "y": 2}, {"text": "é" * 500, "items": [1, [2, {"a": None}]]}])
@pytest.mark.parametrize("priority", [0, 7])
def test_template_matches_celerys_message(kwargs: dict[str, object], priority: int) -> None:
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    template = MessageTemplate(app, "taskgate.add")
    headers, properties, body = build_message(app, "some-id", "taskgate.add", kwargs)
    assert template.parts("some-id", kwargs, priority) == (headers, {**properties, "priority": priority}, body)
    headers, properties, body = build_message(app, "some-id", "taskgate.add", kwargs, owner="ann")
    assert template.parts("some-id", kwargs, priority, owner="ann") == (
        headers, {**properties, "priority": priority}, body)
    assert headers["taskgate_owner"] == "ann"
    other = template.parts("other-id", kwargs)  # nothing of one call leaks into the next
    assert other[0]["id"] == other[0]["root_id"] == other[1]["correlation_id"] == "other-id"


def test_envelope_is_kombus_redis_format() -> None:
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    parts = MessageTemplate(app, "taskgate.add").parts("tid", {"x": 1, "y": 2})
    stored = json.loads(envelope("default", parts, delivery_tag="tid"))
    assert json.loads(base64.b64decode(stored["body"])) == [[], {"x": 1, "y": 2}, parts[2][2]]
    assert stored["properties"]["delivery_tag"] == "tid"
    assert stored["properties"]["delivery_info"] == {"exchange": "", "routing_key": "default"}
    assert stored["content-type"] == "application/json"
    assert json.loads(envelope("default", parts))["properties"]["delivery_tag"] != "tid"

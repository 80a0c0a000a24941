"""The submit path's message template is Celery's own message, field for field."""

from __future__ import annotations

import base64
import json

import pytest

from taskgate.broker import MessageTemplate, RedisBroker, build_message
from taskgate.celery_app import create_celery_app
from taskgate.config import Settings


@pytest.mark.parametrize("kwargs", [{}, {"x": 1, "y": 2}, {"text": "é" * 500, "items": [1, [2, {"a": None}]]}])
@pytest.mark.parametrize("priority", [0, 7])
def test_template_matches_celerys_message(kwargs: dict[str, object], priority: int) -> None:
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    template = MessageTemplate(app, "taskgate.add")
    headers, properties, body = build_message(app, "some-id", "taskgate.add", kwargs)
    assert template.parts("some-id", kwargs, priority) == (headers, {**properties, "priority": priority}, body)
    other = template.parts("other-id", kwargs)  # nothing of one call leaks into the next
    assert other[0]["id"] == other[0]["root_id"] == other[1]["correlation_id"] == "other-id"


def test_envelope_is_kombus_redis_format() -> None:
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    parts = MessageTemplate(app, "taskgate.add").parts("tid", {"x": 1, "y": 2})
    envelope = json.loads(RedisBroker.envelope("default", parts, delivery_tag="tid"))
    assert json.loads(base64.b64decode(envelope["body"])) == [[], {"x": 1, "y": 2}, parts[2][2]]
    assert envelope["properties"]["delivery_tag"] == "tid"
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": "default"}
    assert envelope["content-type"] == "application/json"
    assert json.loads(RedisBroker.envelope("default", parts))["properties"]["delivery_tag"] != "tid"


def test_record_times_read_in_both_forms() -> None:
    """Milliseconds as written now; seconds as records of earlier versions hold them."""
    from taskgate.store import decode_record, stamp

    assert decode_record({b"created_at": str(stamp(1795560962.5)).encode()})["created_at"] == 1795560962.5
    assert decode_record({"started_at": "1795560962.25"})["started_at"] == 1795560962.25

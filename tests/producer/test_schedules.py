"""Schedules, traced: a schedule created in a span keeps it; its run now is the requesting
span's child, linked to that span."""

from __future__ import annotations

import uuid

from opentelemetry import trace
from redis import Redis

from taskgate.producer import Producer
from taskgate.records import TaskRecord, keys

from .. import otel
from .test_producer import with_producer


def test_a_run_now_is_the_request_child_linked_to_the_span_that_created_the_schedule(redis_url: str) -> None:
    queue = f"traced-{uuid.uuid4()}"  # consumed by no worker

    async def run_now(producer: Producer) -> tuple[str, TaskRecord]:
        with trace.get_tracer("app").start_as_current_span("create request"):
            schedule = await producer.schedules.create("add", {"x": 1, "y": 2}, every=3600)
        with trace.get_tracer("app").start_as_current_span("run request"):
            task_id = await producer.schedules.run_now(schedule.schedule_id)
        await producer.schedules.delete(schedule.schedule_id)
        return schedule.schedule_id, await producer.reader.get(task_id)

    redis = Redis.from_url(redis_url)
    try:
        with otel.in_memory() as exporter:
            schedule_id, record = with_producer(redis_url, run_now, default_queue=queue)
            created, ran, request = exporter.get_finished_spans()
    finally:
        redis.delete(queue, keys.schedule(schedule_id))
        redis.close()
    assert ran.name == "taskgate submit add" and ran.parent is not None
    assert ran.parent.span_id == request.context.span_id
    assert dict(ran.attributes or {})["taskgate.schedule.id"] == schedule_id
    (link,) = ran.links
    assert (link.context.trace_id, link.context.span_id) == (created.context.trace_id, created.context.span_id)
    assert dict(link.attributes or {}) == {"taskgate.schedule.id": schedule_id}
    assert record.schedule_id == schedule_id and record.trace_id == f"{request.context.trace_id:032x}"

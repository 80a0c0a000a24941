"""Submitting, traced: the submit is a PRODUCER span whose context travels in the message's
headers and whose trace the record keeps; untraced, neither is there."""

from __future__ import annotations

import uuid

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from redis import Redis

from taskgate.producer import Producer
from taskgate.records.model import TaskRecord

from .. import otel
from .test_producer import with_producer


def test_a_submit_is_a_producer_span_that_its_message_and_record_carry(redis_url: str) -> None:
    queue = f"traced-{uuid.uuid4()}"  # consumed by no worker: its messages stay to be read

    async def submit(producer: Producer) -> tuple[str, TaskRecord | None]:
        spec = producer.spec("add")
        with trace.get_tracer("app").start_as_current_span("request", kind=SpanKind.SERVER):
            submission = await producer.submitter.submit(spec, spec.args_model(x=1, y=2))
        return submission.task_id, await producer.reader.get(submission.task_id)

    redis = Redis.from_url(redis_url)
    try:
        with otel.in_memory() as exporter:
            task_id, record = with_producer(redis_url, submit, default_queue=queue)
            produced, request = exporter.get_finished_spans()
        untraced_id, untraced = with_producer(redis_url, submit, default_queue=queue)
        messages = [orjson.loads(raw) for raw in reversed(redis.lrange(queue, 0, -1))]
    finally:
        redis.delete(queue)
        redis.close()
    assert produced.name == "taskgate submit add" and produced.kind is SpanKind.PRODUCER
    assert produced.parent is not None and produced.parent.span_id == request.context.span_id
    attributes = dict(produced.attributes or {})
    assert (attributes["messaging.message.id"], attributes["messaging.destination.name"]) == (task_id, queue)
    trace_id, span_id = f"{produced.context.trace_id:032x}", f"{produced.context.span_id:016x}"
    assert record is not None and record.trace_id == trace_id
    traced, plain = messages
    assert traced["headers"]["id"] == task_id and traced["headers"]["traceparent"].split("-")[1:3] == [
        trace_id, span_id]
    assert plain["headers"]["id"] == untraced_id and "traceparent" not in plain["headers"]
    assert untraced is not None and untraced.trace_id is None

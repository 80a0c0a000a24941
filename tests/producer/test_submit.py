"""Submitting, traced: the submit is a PRODUCER span whose context travels in the message's
headers and whose trace the record keeps; untraced, neither is there."""

from __future__ import annotations

import uuid

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from redis import Redis

from taskgate.producer import Producer
from taskgate.records import keys
from taskgate.records.model import TaskRecord, decode

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


def test_each_batch_item_is_a_producer_span_of_its_own_under_the_request(redis_url: str) -> None:
    queue = f"traced-{uuid.uuid4()}"  # consumed by no worker

    async def submit(producer: Producer) -> list[str]:
        spec = producer.spec("add")
        with trace.get_tracer("app").start_as_current_span("request", kind=SpanKind.SERVER):
            outcomes = await producer.submitter.submit_many(spec, [spec.args_model(x=i, y=1) for i in range(3)])
        return [outcome.task_id for outcome in outcomes if not isinstance(outcome, Exception)]

    redis = Redis.from_url(redis_url)
    try:
        with otel.in_memory() as exporter:
            task_ids = with_producer(redis_url, submit, default_queue=queue)
            *items, request = exporter.get_finished_spans()
        records = [decode(task_id, redis.hgetall(keys.record(task_id))) for task_id in task_ids]
        messages = [orjson.loads(raw) for raw in reversed(redis.lrange(queue, 0, -1))]
    finally:
        redis.delete(queue)
        redis.close()
    assert len(task_ids) == 3 and request.name == "request"
    assert [span.name for span in items] == ["taskgate submit add"] * 3
    assert [dict(span.attributes or {})["messaging.message.id"] for span in items] == task_ids
    for span, record, message in zip(items, records, messages, strict=True):
        assert span.kind is SpanKind.PRODUCER and span.parent is not None
        assert span.parent.span_id == request.context.span_id, "each the request's child, not its sibling's"
        assert record.trace_id == f"{request.context.trace_id:032x}"
        assert message["headers"]["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


def test_a_replay_links_to_the_run_it_replays_and_is_the_request_child(redis_url: str) -> None:
    queue = f"traced-{uuid.uuid4()}"

    async def replay(producer: Producer) -> tuple[TaskRecord, TaskRecord]:
        spec = producer.spec("add")
        with trace.get_tracer("app").start_as_current_span("first request"):
            first = await producer.submitter.submit(spec, spec.args_model(x=1, y=2))
        with trace.get_tracer("app").start_as_current_span("replay request"):
            again = await producer.control.replay(first.task_id)
        return await producer.reader.get(first.task_id), await producer.reader.get(again.task_id)

    redis = Redis.from_url(redis_url)
    try:
        with otel.in_memory() as exporter:
            first, again = with_producer(redis_url, replay, default_queue=queue)
            _, _, replayed, request = exporter.get_finished_spans()
    finally:
        redis.delete(queue)
        redis.close()
    assert replayed.name == "taskgate submit add" and replayed.parent is not None
    assert replayed.parent.span_id == request.context.span_id
    assert again.replay_of == first.task_id and again.trace_id == f"{request.context.trace_id:032x}"
    (link,) = replayed.links
    assert f"{link.context.trace_id:032x}" == first.trace_id != again.trace_id
    assert dict(link.attributes or {})["taskgate.replay_of"] == first.task_id

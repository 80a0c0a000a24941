"""Control, traced: a dead letter's requeue is a PRODUCER span, the requesting span's child,
linked to the trace the task died in; its record and message carry the new trace."""

from __future__ import annotations

import time
import uuid

import orjson
from opentelemetry import trace
from redis import Redis

from taskgate.producer import Producer
from taskgate.records import TaskRecord, scripts

from .. import otel
from .test_producer import with_producer


def test_a_requeue_links_to_the_trace_it_died_in_and_keeps_the_new_one(redis_url: str) -> None:
    queue = f"traced-{uuid.uuid4()}"  # consumed by no worker: the test plays the worker's part

    async def requeue(producer: Producer) -> tuple[TaskRecord, TaskRecord]:
        spec = producer.spec("add")
        with trace.get_tracer("app").start_as_current_span("submit request"):
            task_id = (await producer.submitter.submit(spec, spec.args_model(x=1, y=2))).task_id
        died = await producer.reader.get(task_id)
        run = producer.backend.scripts
        await run(scripts.start(task_id, "anonymous", name="add", now=time.time(), ttl=60, max_deliveries=3,
                                node="n", failure_ttl=60))
        await run(scripts.dead(task_id, "anonymous", ttl=60, now=time.time(), error=b'{"type": "X"}',
                               arguments=b'{"x": 1, "y": 2}', reason="max_retries"))
        with trace.get_tracer("app").start_as_current_span("requeue request"):
            again = await producer.control.requeue(task_id)
        return died, again

    redis = Redis.from_url(redis_url)
    try:
        with otel.in_memory() as exporter:
            died, again = with_producer(redis_url, requeue, default_queue=queue)
            _, _, requeued, request = exporter.get_finished_spans()
        first, second = [orjson.loads(raw) for raw in reversed(redis.lrange(queue, 0, -1))]
    finally:
        redis.delete(queue)
        redis.close()
    assert requeued.name == "taskgate submit add" and requeued.parent is not None
    assert requeued.parent.span_id == request.context.span_id
    (link,) = requeued.links
    assert f"{link.context.trace_id:032x}" == died.trace_id
    assert f"{link.context.span_id:016x}" == died.span_id, "to the submit span it died after"
    assert dict(link.attributes or {})["taskgate.requeue_of"] == died.task_id
    assert again.task_id == died.task_id and again.trace_id == f"{request.context.trace_id:032x}" != died.trace_id
    assert first["headers"]["id"] == second["headers"]["id"] == died.task_id
    assert second["headers"]["traceparent"].split("-")[2] == f"{requeued.context.span_id:016x}"

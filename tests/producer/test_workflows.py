"""Workflows, traced: the submit is a span ``taskgate submit workflow <name>``, each node's run
a PRODUCER span under it whose context its message carries (also a node released later by the
end script), and the workflow's hash and its runs' records keep the trace."""

from __future__ import annotations

import uuid

import orjson
from opentelemetry import trace
from redis import Redis

from taskgate.producer import Producer
from taskgate.producer.submit import SYSTEM
from taskgate.records import keys
from taskgate.workflow.spec import WorkflowSpec

from .. import otel
from .test_producer import with_producer


def test_workflow_nodes_are_children_of_the_workflow_span(redis_url: str) -> None:
    queue = f"traced-{uuid.uuid4()}"  # consumed by no worker: the root's message stays there
    spec = WorkflowSpec.model_validate({"name": "traced", "nodes": {
        "sum": {"task": "add", "arguments": {"x": 1, "y": 2}},
        "squared": {"task": "add", "arguments": {"x": {"$result": "sum"}, "y": 1}}}})

    async def submit(producer: Producer) -> tuple[str, dict[str, str]]:
        with trace.get_tracer("app").start_as_current_span("request"):
            submitted = await producer.workflows.submit(spec, SYSTEM)
        return submitted.workflow_id, submitted.tasks

    redis = Redis.from_url(redis_url)
    try:
        with otel.in_memory() as exporter:
            workflow_id, tasks = with_producer(redis_url, submit, default_queue=queue)
            *nodes, workflow, request = exporter.get_finished_spans()
        (root,) = [orjson.loads(raw) for raw in redis.lrange(queue, 0, -1)]
        waiting = orjson.loads(redis.hget(keys.record(tasks["squared"]), "message"))  # its envelope
        stored = redis.hget(keys.workflow(workflow_id), "traceparent").decode()
        kept = [redis.hget(keys.record(task_id), "trace_id") for task_id in tasks.values()]
    finally:
        redis.delete(queue)
        redis.close()
    trace_id = f"{request.context.trace_id:032x}"
    assert workflow.name == "taskgate submit workflow traced" and workflow.parent is not None
    assert workflow.parent.span_id == request.context.span_id
    assert dict(workflow.attributes or {})["taskgate.workflow.id"] == workflow_id
    assert stored.split("-")[1:3] == [trace_id, f"{workflow.context.span_id:016x}"]
    by_task = {dict(span.attributes or {})["messaging.message.id"]: span for span in nodes}
    assert set(by_task) == set(tasks.values())
    for span in nodes:
        assert span.name == "taskgate submit add" and span.parent is not None
        assert span.parent.span_id == workflow.context.span_id
    for message in (root, waiting):
        span = by_task[message["headers"]["id"]]
        assert message["headers"]["traceparent"].split("-")[1:3] == [trace_id, f"{span.context.span_id:016x}"]
    assert kept == [trace_id.encode()] * 2

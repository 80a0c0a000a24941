"""``taskgate traces`` (``service/trace_sink.py``): a real process receiving OpenTelemetry's
own OTLP/HTTP exporter, printing one line (or JSON object) per span."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, StatusCode

from ..helpers import free_port, stop, taskgate, wait_for


def export_a_trace(port: int) -> tuple[str, str, str]:
    """A PRODUCER span with a CONSUMER child, sent with OpenTelemetry's exporter to the sink:
    (trace id, producer span id, consumer span id)."""
    provider = TracerProvider(resource=Resource({"service.name": "sink-test"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")))
    tracer = provider.get_tracer("sink-test")
    with tracer.start_as_current_span("taskgate submit add", kind=SpanKind.PRODUCER,
                                      attributes={"messaging.system": "celery"}) as producer:
        context = producer.get_span_context()
        with tracer.start_as_current_span("taskgate run add", kind=SpanKind.CONSUMER,
                                          links=[Link(context)]) as consumer:
            consumer.add_event("taskgate.retry")
            consumer.set_status(StatusCode.ERROR)
    provider.shutdown()
    return (f"{context.trace_id:032x}", f"{context.span_id:016x}",
            f"{consumer.get_span_context().span_id:016x}")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_traces_prints_each_span_it_receives(tmp_path: Path, as_json: bool) -> None:
    port = free_port()
    log = tmp_path / "traces.log"
    proc = taskgate(["traces", f"--port={port}", *(["--json"] if as_json else [])], dict(os.environ), log)
    try:
        wait_for(lambda: b"OTLP/HTTP on" in log.read_bytes() or proc.poll() is not None, 20, "the sink")
        assert proc.poll() is None, log.read_text()
        trace_id, producer, consumer = export_a_trace(port)
        wait_for(lambda: log.read_text().count(trace_id) >= 2, 20, "both spans printed")
        base = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{base}/v1/traces", json={}).status_code == 415  # OTLP's JSON encoding
        assert httpx.post(f"{base}/v1/metrics", content=b"", headers={
            "content-type": "application/x-protobuf"}).status_code == 404
        assert httpx.post(f"{base}/v1/traces", content=b"\xff\xff", headers={
            "content-type": "application/x-protobuf"}).status_code == 400
    finally:
        stop(proc)
    lines = [line for line in log.read_text().splitlines() if trace_id in line]
    if as_json:
        spans = {span["name"]: span for span in map(orjson.loads, lines)}
        run, submit = spans["taskgate run add"], spans["taskgate submit add"]
        assert (submit["kind"], submit["parent_id"], submit["service"]) == ("PRODUCER", "", "sink-test")
        assert submit["attributes"] == {"messaging.system": "celery"}
        assert (run["kind"], run["span_id"], run["parent_id"], run["status"]) == ("CONSUMER", consumer, producer,
                                                                                  "ERROR")
        assert run["events"] == ["taskgate.retry"] and run["links"] == [f"{trace_id}:{producer}"]
        assert run["duration_ms"] >= 0
    else:
        run_line, submit_line = lines  # the child ends, and is exported, first
        assert submit_line.startswith(f"{trace_id} {producer} - PRODUCER sink-test 'taskgate submit add' ")
        assert submit_line.endswith(" UNSET messaging.system='celery'")
        assert run_line.startswith(f"{trace_id} {consumer} {producer} CONSUMER sink-test 'taskgate run add' ")
        assert run_line.endswith(f" ERROR event=taskgate.retry link={trace_id}:{producer}")


def test_its_help_names_the_extra_to_install() -> None:
    """Help is plain text: rich markup would read ``[otel]`` as a tag and drop it."""
    shown = subprocess.run([sys.executable, "-m", "taskgate", "traces", "--help"], capture_output=True, text=True,
                           check=True, env={**os.environ, "COLUMNS": "80"}).stdout
    assert "pip install 'taskgate[otel]'" in " ".join(shown.split())

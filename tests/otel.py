"""OpenTelemetry for the tests: a tracer provider for this process with an in-memory exporter
(set for one test, then unset), and a local OTLP/HTTP receiver that real processes export to."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from .helpers import wait_for


def _unset_provider() -> None:
    """Forget this process's global tracer provider (set once by the API's design), as
    OpenTelemetry's own test utilities do, so one test's provider leaves the others untraced."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@contextmanager
def in_memory() -> Iterator[InMemorySpanExporter]:
    """A global tracer provider exporting every span, as it ends, to the exporter yielded."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _unset_provider()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        _unset_provider()


@dataclass(frozen=True)
class Received:
    """One span as an OTLP/HTTP export carried it (ids in hex)."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: list[str]
    status: str
    links: list[str] = field(default_factory=list)


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Receiver:
    """An OTLP/HTTP trace receiver on a free loopback port (``endpoint``), keeping every span."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._keep(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        kinds = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
        statuses = {0: "UNSET", 1: "OK", 2: "ERROR"}
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received = Received(
                        service=str(resource.get("service.name")), name=span.name,
                        kind=kinds.get(span.kind, str(span.kind)), trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(), parent_id=span.parent_span_id.hex(),
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        events=[event.name for event in span.events], status=statuses[span.status.code],
                        links=[link.span_id.hex() for link in span.links])
                    with self._lock:
                        self.spans.append(received)

    def wait(self, check: Callable[[list[Received]], bool], timeout: float = 30) -> None:
        """Until ``check(spans)`` holds."""
        wait_for(lambda: check(list(self.spans)), timeout, "spans")

    def named(self, name: str, timeout: float = 30) -> Received:
        """The first span called ``name``, once it arrived."""
        wait_for(lambda: any(span.name == name for span in self.spans), timeout, f"span {name!r}")
        return next(span for span in self.spans if span.name == name)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

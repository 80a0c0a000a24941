"""A local trace sink: ``taskgate traces`` receives OTLP/HTTP spans and prints one line each.

For trying tracing without a collector or Jaeger at hand, as the SMTP sink is for mail: run it,
then ``taskgate up`` (or ``api``/``worker``) with ``TASKGATE_OTEL=on``; OpenTelemetry's exporter
sends to ``http://localhost:4318`` by default, where the sink listens. Each span is a line with
its trace id, its id, its parent's (``-`` for a trace's root), kind, service, name, duration,
status, attributes, events and links, or a JSON object with ``--json``, in the order the
processes export them (each process in batches). Needs ``pip install 'taskgate[otel]'`` (the
OTLP exporter brings the protocol's messages). Only the protobuf encoding, which OpenTelemetry's
Python exporter sends; one answered in JSON is refused with 415.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

#: OTLP's path for traces.
PATH = "/v1/traces"
#: The bytes of one export read at most.
MAX_EXPORT = 16 * 1024 * 1024
KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUSES = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass(frozen=True)
class Span:
    """One span as an OTLP export carried it (ids in hex; ``parent_id`` empty for a root)."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    status: str
    attributes: dict[str, Any]
    events: list[str]
    #: The linked spans, as ``<trace id>:<span id>``.
    links: list[str] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def line(self) -> str:
        """The span on one line of text."""
        parts = [self.trace_id, self.span_id, self.parent_id or "-", self.kind, self.service,
                 repr(self.name), f"{self.duration_ms:.1f}ms", self.status]
        parts += [f"{key}={value!r}" for key, value in self.attributes.items()]
        parts += [f"event={name}" for name in self.events]
        parts += [f"link={link}" for link in self.links]
        return " ".join(parts)

    def json(self) -> bytes:
        return orjson.dumps({**asdict(self), "duration_ms": round(self.duration_ms, 3)})


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {pair.key: _value(pair.value) for pair in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def decode(body: bytes) -> Iterator[Span]:
    """The spans of one OTLP/HTTP protobuf export (``ExportTraceServiceRequest``)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    for resource_spans in request.resource_spans:
        resource = {pair.key: _value(pair.value) for pair in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield Span(
                    service=str(resource.get("service.name", "?")), name=span.name,
                    kind=KINDS.get(span.kind, str(span.kind)), trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(), parent_id=span.parent_span_id.hex(),
                    start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                    status=STATUSES.get(span.status.code, str(span.status.code)),
                    attributes={pair.key: _value(pair.value) for pair in span.attributes},
                    events=[event.name for event in span.events],
                    links=[f"{link.trace_id.hex()}:{link.span_id.hex()}" for link in span.links])


def _answer() -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    return bytes(ExportTraceServiceResponse().SerializeToString())


class Sink:
    """An OTLP/HTTP trace receiver on ``host:port`` (0: a free port; :attr:`endpoint` says
    which) that hands every span it receives to ``keep``, in a thread of its own."""

    def __init__(self, keep: Callable[[Span], None], host: str = "127.0.0.1", port: int = 0) -> None:
        answer, lock = _answer(), threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                if self.path.split("?")[0] != PATH:
                    self._reply(404, b"traces go to " + PATH.encode())
                    return
                if self.headers.get("Content-Type", "").split(";")[0] != "application/x-protobuf":
                    self._reply(415, b"only application/x-protobuf")
                    return
                if length > MAX_EXPORT:
                    self._reply(413, b"export too large")
                    return
                try:
                    spans = list(decode(self.rfile.read(length)))
                except Exception:  # a body that is not an export: the sender's to fix
                    self._reply(400, b"not an OTLP ExportTraceServiceRequest")
                    return
                with lock:
                    for span in spans:
                        keep(span)
                self._reply(200, answer, "application/x-protobuf")

            def _reply(self, status: int, body: bytes, kind: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # no access log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="taskgate-traces",
                                        daemon=True)

    def start(self) -> Sink:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(host: str, port: int, as_json: bool) -> None:
    """Print every span received on ``host:port`` to stdout until SIGTERM or SIGINT."""
    out = sys.stdout

    def show(span: Span) -> None:
        out.write(span.json().decode() if as_json else span.line())
        out.write("\n")
        out.flush()

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    sink = Sink(show, host, port).start()
    print(f"taskgate traces: OTLP/HTTP on {sink.endpoint}{PATH}; Ctrl-C stops", file=sys.stderr, flush=True)
    stop.wait()
    sink.close()

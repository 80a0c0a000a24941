"""OpenTelemetry for the tests: a tracer provider for this process with an in-memory exporter
(set for one test, then unset), and a local OTLP/HTTP receiver that real processes export to."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from taskgate.service.trace_sink import Sink, Span

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


#: One span as an OTLP/HTTP export carried it (ids in hex): the trace sink's.
Received = Span


class Receiver:
    """An OTLP/HTTP trace receiver on a free loopback port (``endpoint``), keeping every span:
    ``taskgate traces``'s sink."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self._sink = Sink(self.spans.append).start()
        self.endpoint = self._sink.endpoint

    def wait(self, check: Callable[[list[Received]], bool], timeout: float = 30) -> None:
        """Until ``check(spans)`` holds."""
        wait_for(lambda: check(list(self.spans)), timeout, "spans")

    def named(self, name: str, timeout: float = 30) -> Received:
        """The first span called ``name``, once it arrived."""
        wait_for(lambda: any(span.name == name for span in self.spans), timeout, f"span {name!r}")
        return next(span for span in self.spans if span.name == name)

    def close(self) -> None:
        self._sink.close()

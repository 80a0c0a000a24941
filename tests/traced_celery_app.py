"""``tests.plain_celery_app`` traced by OpenTelemetry's own Celery instrumentation, exporting
to OTEL_EXPORTER_OTLP_ENDPOINT: ``celery -A tests.traced_celery_app worker --pool=solo``
(``tests/test_tracing.py``: it continues the trace of a message taskgate sent)."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from .plain_celery_app import app

provider = TracerProvider(resource=Resource({"service.name": "plain-celery"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
CeleryInstrumentor().instrument()

__all__ = ["app"]

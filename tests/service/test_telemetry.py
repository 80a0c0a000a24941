"""service.telemetry: what TASKGATE_OTEL=on needs, and the console exporter's JSON lines."""

from __future__ import annotations

import io
import json
import sys

import pytest

from taskgate import tracing
from taskgate.exceptions import ConfigurationError
from taskgate.service import telemetry

from .. import otel


def test_an_unknown_exporter_or_a_missing_extra_is_said_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigurationError, match="otlp .*console or none"):
        telemetry.require()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'taskgate\[otel\]'"):
        telemetry.require()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    telemetry.require()  # the console needs no exporter package


def test_console_prints_a_json_line_per_span(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "__stdout__", out)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    try:
        assert telemetry.setup("api") and tracing.active()
        assert not telemetry.setup("api"), "a provider already set is kept"
        for task_id in ("t1", "t2"):
            with tracing.producer_span("add", task_id, "celery"):
                pass
        telemetry.shutdown()
    finally:
        otel._unset_provider()
    spans = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(span["name"], span["attributes"]["messaging.message.id"]) for span in spans] == [
        ("taskgate submit add", "t1"), ("taskgate submit add", "t2")]
    assert spans[0]["resource"]["attributes"]["service.name"] == "taskgate-api"

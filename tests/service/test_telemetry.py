"""service.telemetry: what TASKGATE_OTEL=on needs, and the console exporter's JSON lines."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from opentelemetry import trace

from taskgate import tracing
from taskgate.exceptions import ConfigurationError
from taskgate.service import telemetry

from .. import otel
from ..helpers import start_api, stop, wait_for


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


def test_a_prefork_worker_s_main_process_traces_through_a_provider_its_pool_processes_replace(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's main process (its keeper fires schedules' ticks) gets a provider of
    taskgate's own, not the global one, which each pool process, forked from it, sets to its
    own: it forgets the inherited one first (``forked``). Each one's spans are its own."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "__stdout__", out)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    main = None
    try:
        assert telemetry.setup("worker", own=True) and tracing.active()
        main = telemetry._provider
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider), "the global one stays unset"
        assert not telemetry.setup("worker"), "one is set already"
        with tracing.producer_span("add", "tick", "celery", root=True) as tick:
            assert tick is not None and tracing.record_ids()
        telemetry.forked()  # in a pool process, first
        assert not tracing.active() and telemetry._provider is None
        assert telemetry.setup("worker") and trace.get_tracer_provider() is telemetry._provider
        with tracing.producer_span("add", "run", "celery"):
            pass
        telemetry.shutdown()
    finally:
        telemetry.shutdown()
        tracing.use(None)
        if main is not None:
            main.shutdown()  # what the main process exports as it stops
        otel._unset_provider()
    spans = [json.loads(line) for line in out.getvalue().splitlines()]
    assert sorted(span["attributes"]["messaging.message.id"] for span in spans) == ["run", "tick"]
    assert telemetry.setup("worker", own=True) and tracing.active()
    telemetry.shutdown()
    assert not tracing.active(), "stopped, it makes no spans"


def test_an_unknown_metrics_exporter_is_said_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus")
    with pytest.raises(ConfigurationError, match="OTEL_METRICS_EXPORTER=prometheus: .*console or none"):
        telemetry.require()
    monkeypatch.delenv("OTEL_METRICS_EXPORTER")
    assert telemetry.metric_exporters() == [], "no metrics exported unless asked"


def test_the_api_exports_its_metrics_when_otel_metrics_exporter_is_set(redis_url: str, tmp_path: Path) -> None:
    """A real ``taskgate api`` with TASKGATE_OTEL=on and OTEL_METRICS_EXPORTER=console: the
    cluster's numbers (``producer.otel_metrics``) as JSON lines on its output."""
    log = tmp_path / "api.log"
    proc, base = start_api(redis_url, log, TASKGATE_OTEL="on", OTEL_TRACES_EXPORTER="none",
                           OTEL_METRICS_EXPORTER="console", OTEL_METRIC_EXPORT_INTERVAL="200")
    try:
        wait_for(lambda: '"taskgate.workers"' in log.read_text(), 30, "an export of taskgate.workers")
    finally:
        stop(proc)
    exports = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"resource_metrics"')]
    names = {metric["name"] for export in exports for resource in export["resource_metrics"]
             for scope in resource["scope_metrics"] for metric in scope["metrics"]}
    assert {"taskgate.workers", "taskgate.queue.depth", "taskgate.dead_letters"} <= names, names
    resource = exports[0]["resource_metrics"][0]["resource"]["attributes"]
    assert resource["service.name"] == "taskgate-api"

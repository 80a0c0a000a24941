"""OpenTelemetry's SDK in taskgate's own processes, with ``TASKGATE_OTEL=on``.

``taskgate api`` (each of its processes) and ``taskgate worker`` (each of its processes: see
:func:`for_worker`) set up a tracer provider from OpenTelemetry's standard variables, so
``taskgate.tracing`` records their spans:

- ``OTEL_SERVICE_NAME`` (default ``taskgate-api`` / ``taskgate-worker``) and
  ``OTEL_RESOURCE_ATTRIBUTES``;
- ``OTEL_TRACES_EXPORTER``: ``otlp`` (the default: OTLP over HTTP to
  ``OTEL_EXPORTER_OTLP_ENDPOINT``, default ``http://localhost:4318``, or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, with the exporter's own ``OTEL_EXPORTER_OTLP_*``
  options), ``console`` (each span as one JSON line on the process's output), ``none``
  (spans made and propagated, not exported), or several, comma-separated;
- the batching processor's ``OTEL_BSP_*`` and the sampler's ``OTEL_TRACES_SAMPLER*``;
  ``OTEL_SDK_DISABLED=true`` sets up nothing;
- ``OTEL_METRICS_EXPORTER`` (``otlp``, ``console`` or ``none``; unlike OpenTelemetry's own
  default, taskgate exports no metrics unless it is set: ``GET /metrics`` has them already):
  the API's processes also get a meter provider, exporting every
  ``OTEL_METRIC_EXPORT_INTERVAL`` ms, on which the API registers its instruments
  (``producer.otel_metrics``).

In a user's own app taskgate sets up nothing: it uses the provider the app set up.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from ..config import Settings
from ..exceptions import ConfigurationError

log = logging.getLogger("taskgate.telemetry")

#: How to get what TASKGATE_OTEL=on needs.
INSTALL = "pip install 'taskgate[otel]'"
#: This process's providers, once :func:`setup` made them.
_provider: Any = None
_meter_provider: Any = None
#: Whether ``_provider`` is taskgate's own (``tracing.use``), not the global one.
_own = False


def exporters() -> list[str]:
    """The exporters OTEL_TRACES_EXPORTER names (``otlp`` by default)."""
    named = [name.strip().lower() for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    return [name for name in named if name] or ["otlp"]


def metric_exporters() -> list[str]:
    """The exporters OTEL_METRICS_EXPORTER names (none unless it is set)."""
    named = [name.strip().lower() for name in os.environ.get("OTEL_METRICS_EXPORTER", "none").split(",")]
    return [name for name in named if name not in ("", "none")]


def require() -> None:
    """:class:`ConfigurationError` unless the SDK and the exporters OTEL_TRACES_EXPORTER and
    OTEL_METRICS_EXPORTER name can be imported, or one names an exporter taskgate does not know."""
    named = (("OTEL_TRACES_EXPORTER", exporters()), ("OTEL_METRICS_EXPORTER", metric_exporters()))
    for variable, names in named:
        if set(names) - {"otlp", "console", "none"}:
            raise ConfigurationError(f"{variable}={os.environ[variable]}: taskgate exports to otlp "
                                     "(OTLP over HTTP), console or none")
    try:
        import opentelemetry.sdk.trace  # noqa: F401
        if "otlp" in exporters():
            import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        if "otlp" in metric_exporters():
            import opentelemetry.exporter.otlp.proto.http.metric_exporter  # noqa: F401
    except ImportError as exc:
        raise ConfigurationError(f"TASKGATE_OTEL=on needs OpenTelemetry's SDK and exporter ({exc}): "
                                 f"{INSTALL}") from None


def setup(role: str, *, own: bool = False) -> bool:
    """Set this process's global tracer provider from the standard variables (see the module's
    docstring); ``role`` names the service by default (``taskgate-<role>``). ``own``: make it
    taskgate's own instead (``tracing.use``), leaving the global one unset for the processes
    forked from this one to set (see :func:`forked`). False when OTEL_SDK_DISABLED is true or a
    provider was set already (by the app: it is kept)."""
    global _provider, _own
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    from .. import tracing

    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or tracing.active():
        return False
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": f"taskgate-{role}"}))
    provider = TracerProvider(resource=resource)
    for name in exporters():
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":  # one JSON line per span, written as it ends
            # the process's own output: Celery's pool processes turn sys.stdout into log lines
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(
                out=sys.__stdout__ or sys.stdout, formatter=lambda span: span.to_json(indent=None) + "\n")))
    if own:
        tracing.use(provider)
    else:
        trace.set_tracer_provider(provider)
    _provider, _own = provider, own
    log.info("tracing on: OpenTelemetry exporting to %s as %s", ", ".join(exporters()),
             resource.attributes.get("service.name"))
    if role == "api":
        _setup_metrics(resource)
    return True


def _setup_metrics(resource: Any) -> None:
    """A global meter provider exporting to what OTEL_METRICS_EXPORTER names, if anything."""
    global _meter_provider
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricExporter,
        PeriodicExportingMetricReader,
    )

    readers = []
    for name in metric_exporters():
        exporter: MetricExporter
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter()
        else:  # console: one JSON line per export, on the process's own output
            exporter = ConsoleMetricExporter(out=sys.__stdout__ or sys.stdout,
                                             formatter=lambda data: data.to_json(indent=None) + "\n")
        readers.append(PeriodicExportingMetricReader(exporter))
    if readers:
        _meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(_meter_provider)


def shutdown() -> None:
    """Export what this process's provider still holds and stop it (a pool process ends with
    ``os._exit``: nothing at exit would)."""
    global _provider, _meter_provider, _own
    if _provider is not None:
        provider, _provider = _provider, None
        if _own:
            from .. import tracing

            tracing.use(None)
            _own = False
        provider.shutdown()
    if _meter_provider is not None:
        meter_provider, _meter_provider = _meter_provider, None
        meter_provider.shutdown()


def check(settings: Settings) -> None:
    """With TASKGATE_OTEL=on, :func:`require` (``taskgate up``: its api and worker set up their
    own providers)."""
    if settings.otel:
        require()


def start(settings: Settings, role: str) -> None:
    """With TASKGATE_OTEL=on, set up this process's provider (:func:`require`, then
    :func:`setup`); else nothing."""
    if settings.otel:
        require()
        setup(role)


def forked() -> None:
    """In a process forked from one that set up a provider of taskgate's own (a prefork pool
    process, from the worker's main process), forget the copy it inherited, so that
    :func:`setup` makes this process's. Not shut down: its exporter's connections may be held
    by a lock a thread of the parent held at the fork; its export thread, which the SDK
    restarts in the child with an empty queue, stays idle."""
    global _provider, _own
    if _own:
        from .. import tracing

        tracing.use(None)
        _provider, _own = None, False


def for_worker(settings: Settings) -> None:
    """With TASKGATE_OTEL=on, have each process of the worker about to start set up its own
    provider. With a pool that forks (prefork): each pool process, after its fork, the global
    one; the main process, whose keeper fires schedules' ticks, one of taskgate's own
    (``tracing.use``: OpenTelemetry's global one is set once per process, and each pool
    process forgets the copy it inherits, :func:`forked`). With one that does not (solo,
    threads): the main process the global one. Each flushes as it stops. The webhook
    deliverer's process (``worker.webhook_process``: started anew, not forked) sets up its
    own."""
    if not settings.otel:
        return
    require()
    from celery import concurrency
    from celery.concurrency.prefork import TaskPool
    from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown

    def in_pool_process(**_: Any) -> None:
        forked()
        setup("worker")

    def in_main_process(sender: Any = None, **_: Any) -> None:
        pool = concurrency.get_implementation(getattr(sender, "pool_cls", None) or "prefork")
        setup("worker", own=isinstance(pool, type) and issubclass(pool, TaskPool))

    def stopping(**_: Any) -> None:
        shutdown()

    worker_process_init.connect(in_pool_process, weak=False)
    worker_init.connect(in_main_process, weak=False)
    worker_process_shutdown.connect(stopping, weak=False)
    worker_shutdown.connect(stopping, weak=False)

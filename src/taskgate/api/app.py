"""The standalone API (``taskgate api``): built from the library's public parts."""

from __future__ import annotations

import gc
import inspect
import logging
import os
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.types import Receive, Scope, Send

from .. import __version__, tracing
from ..config import Settings, get_settings, is_loopback
from ..exceptions import ConfigurationError
from ..gate import Taskgate
from . import docs
from .errors import TaskgateRoute
from .routes import ui

log = logging.getLogger("taskgate.api")


def auth_enabled(settings: Settings, host: str) -> bool:
    """Whether API keys are required when serving on ``host``; refuses an open public bind."""
    enabled = settings.auth == "on" or (settings.auth == "auto" and not is_loopback(host))
    if not enabled and not is_loopback(host) and not settings.insecure_no_auth:
        raise ConfigurationError(
            f"refusing to serve on {host} without API keys: anyone reaching it could run tasks. "
            "Create keys with `taskgate keys create --owner NAME` and use TASKGATE_AUTH=auto (the "
            "default) or on; or bind to 127.0.0.1; or set TASKGATE_INSECURE_NO_AUTH=1 if you must")
    return enabled


class ServiceApp(FastAPI):
    """The service's FastAPI app, answering its submit routes directly: a request for the
    exact method and path of a route whose endpoint reads its own parameters
    (``errors.direct``: ``GET /add``, ``POST /tasks/{name}`` of each task served at start) goes
    straight to that endpoint behind the route's own guards and error mapping, without
    FastAPI's middleware stack, routing and request handling, which cost more CPU than the
    submit itself. The routes stay on the app, as declared (OpenAPI, and every other request).
    Only here: a user's app may add dependencies or middleware that a route must pass. When
    tracing is on (``taskgate.tracing``), such a request is a SERVER span of taskgate's own,
    continuing its ``traceparent``: the parent of the submit's span."""

    #: (method, path) -> guarded endpoint; None while FastAPI must see every request.
    direct: dict[tuple[str, str], Any] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.direct:
            handle = self.direct.get((scope["method"], scope["path"]))
            if handle is not None:
                scope["app"] = self
                if tracing.active():
                    await self._traced(handle, scope, receive, send)
                    return
                response = await handle(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _traced(self, handle: Any, scope: Scope, receive: Receive, send: Send) -> None:
        with tracing.server_span(scope, scope["path"]) as span:  # the route's path: an exact one
            response = await handle(Request(scope, receive, send))
            if span is not None:
                tracing.responded(span, response.status_code)
            await response(scope, receive, send)


def _otel_configured(traces: bool = True) -> bool:
    """Whether OpenTelemetry is set up in this process (a tracer or meter provider installed,
    as ``opentelemetry-instrument`` does, or FastAPI told to configure it from the environment);
    ``traces=False``: for more than traces (a meter provider, or FastAPI's own set-up)."""
    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true":
        return True
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        return False
    deferred = {"ProxyTracerProvider", "NoOpTracerProvider", "_ProxyMeterProvider", "NoOpMeterProvider"}
    providers = (trace.get_tracer_provider(), metrics.get_meter_provider())
    return any(type(provider).__name__ not in deferred for provider in providers[0 if traces else 1:])


#: Paths polled by probes and scrapers: no span of FastAPI's own telemetry (a probe every few
#: seconds would fill a collector with traces nobody reads).
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


def _probe(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in PROBES


def _telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry (its ``telemetry=``, in FastAPI versions that have it): on when
    OpenTelemetry is set up at start, but for :data:`PROBES`; else off, so no request pays for
    asking whether it is (FastAPI asks the providers, which read the environment, on every
    request)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    on = _otel_configured()
    return {"telemetry": {"tracing": on, "metrics": on, "logs": on, "exclude": _probe}}


def _frozen_after_start(gate: Taskgate) -> Any:
    """``gate``'s lifespan, then ``gc.freeze()``: what the process loaded to start (modules,
    the app, its routes and models) lives as long as it does, and left to the collector's
    full passes it cost a pause of 60-80 ms every few seconds of a busy API (measured under
    wrk), each one holding every request in flight."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with gate.lifespan(app):
            gc.collect()
            gc.freeze()
            yield

    return lifespan


def create_app(settings: Settings | None = None, host: str = "127.0.0.1",
               log_submits: bool = True) -> FastAPI:
    """The standalone API for serving on ``host``: a :class:`~taskgate.Taskgate` and its router
    (the same the library gives a user's app, its routes capping request bodies themselves), with
    the interactive docs served offline. Auth follows TASKGATE_AUTH (auto: on unless ``host`` is loopback).
    ``log_submits``: log an ``accepted`` line (with the task id) per submitted task."""
    settings = settings or get_settings()
    # The service serves every task, the built-in ones included (GET /add, POST /files...).
    gate = Taskgate(settings, auth=auth_enabled(settings, host), log_submits=log_submits, builtins=True)
    telemetry = _telemetry()
    app = ServiceApp(
        title="taskgate",
        version=__version__,
        description="Submit slow work to Celery workers and ask how it went. "
        "Errors always come as `{\"error\": {\"type\", \"message\", \"retryable\"}}`.",
        lifespan=_frozen_after_start(gate),
        docs_url=None, redoc_url=None,  # served by docs.install, with no CDN
        **telemetry,
    )
    gate.install_error_handlers(app, validation=True)
    docs.install(app)
    app.include_router(gate.router)
    app.get("/", include_in_schema=False)(ui.to_dashboard)
    route_class = gate.router.route_class
    # FastAPI's own metrics, when on, see every request; traces alone do not need them to (the
    # direct routes are spans of taskgate's own, see ServiceApp)
    if not (telemetry and _otel_configured(traces=False)) and issubclass(route_class, TaskgateRoute):
        app.direct = route_class.direct
    return app

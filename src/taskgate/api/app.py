"""The standalone API (``taskgate api``): built from the library's public parts."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from .. import __version__
from ..config import Settings, get_settings, is_loopback
from ..exceptions import ConfigurationError
from ..gate import Taskgate
from . import docs
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


def create_app(settings: Settings | None = None, host: str = "127.0.0.1",
               log_submits: bool = True) -> FastAPI:
    """The standalone API for serving on ``host``: a :class:`~taskgate.Taskgate` and its router
    (the same the library gives a user's app, its routes capping request bodies themselves), with
    the interactive docs served offline. Auth follows TASKGATE_AUTH (auto: on unless ``host`` is loopback).
    ``log_submits``: log an ``accepted`` line (with the task id) per submitted task."""
    settings = settings or get_settings()
    # The service serves every task, the built-in ones included (GET /add, POST /files...).
    gate = Taskgate(settings, auth=auth_enabled(settings, host), log_submits=log_submits, builtins=True)
    app = FastAPI(
        title="taskgate",
        version=__version__,
        description="Submit slow work to Celery workers and ask how it went. "
        "Errors always come as `{\"error\": {\"type\", \"message\", \"retryable\"}}`.",
        lifespan=gate.lifespan,
        docs_url=None, redoc_url=None,  # served by docs.install, with no CDN
    )
    gate.install_error_handlers(app, validation=True)
    docs.install(app)
    app.include_router(gate.router)
    app.get("/", include_in_schema=False)(ui.to_dashboard)
    return app

"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..config import Settings, get_settings
from ..jobs import Gateway
from ..registry import load
from . import errors
from .routes import dead_letters, files, health, tasks, tutorial


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; the gateway (Redis clients, Celery app) is created at startup."""
    settings = settings or get_settings()
    settings.require_redis_url()  # fail at once, with the fix, rather than on first request
    catalogue = load(settings.task_modules)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gateway = Gateway.from_settings(settings)
        app.state.gateway = gateway
        try:
            yield
        finally:
            await gateway.close()

    app = FastAPI(
        title="taskgate",
        version=__version__,
        description="Submit slow work to Celery workers and ask how it went. "
        "Errors always come as `{\"error\": {\"type\", \"message\", \"retryable\"}}`.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    app.include_router(tutorial.router)
    app.include_router(tasks.build_router(catalogue))
    app.include_router(files.router)
    app.include_router(dead_letters.router)
    app.include_router(health.router)
    return app

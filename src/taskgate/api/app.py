"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI

from .. import __version__
from ..config import Settings, get_settings, is_loopback
from ..exceptions import ConfigurationError, TaskGateError
from ..producer import Producer
from ..producer.metrics import watch_loop_lag
from ..records import keys
from ..records.upgrade import upgrade_at
from ..records.workers import catalogue_entries
from ..registry import load
from . import docs, errors
from .limits import BodyLimit
from .routes import dead_letters, files, health, metrics, tasks, tutorial

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


async def publish_catalogue(producer: Producer) -> None:
    """Tell workers which module declares each task (they name it when they lack one).
    Best effort: an API starting while Redis is down still starts, and serves 503s meanwhile."""
    entries = catalogue_entries(producer.catalogue.values(), producer.settings.default_queue)
    modules: dict[Any, Any] = {name: orjson.dumps(entry) for name, entry in entries.items()}
    try:
        async with producer.backend.deadline():
            await producer.backend.redis.hset(keys.CATALOGUE, mapping=modules)
    except TaskGateError as exc:
        log.warning("could not publish the task catalogue (%s); workers lacking a task will not "
                    "name its module", exc)


async def upgrade_records(settings: Settings) -> None:
    """Move records an earlier version wrote to this key layout (once per Redis; see
    ``records.upgrade``). Best effort, like :func:`publish_catalogue`."""
    from redis.exceptions import RedisError

    try:
        await asyncio.to_thread(upgrade_at, settings.require_redis_url(), settings.backend_timeout)
    except RedisError as exc:
        log.warning("could not check the records' key layout (%s)", exc)


def create_app(settings: Settings | None = None, host: str = "127.0.0.1",
               log_submits: bool = True) -> FastAPI:
    """Build the API for serving on ``host``; the producer (Redis clients, Celery app) is created
    at startup. Auth follows TASKGATE_AUTH (auto: on unless ``host`` is loopback).
    ``log_submits``: log an ``accepted`` line (with the task id) per submitted task."""
    settings = settings or get_settings()
    settings.require_redis_url()  # fail at once, with the fix, rather than on first request
    auth = auth_enabled(settings, host)
    catalogue = load(settings.task_modules)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await upgrade_records(settings)
        producer = Producer.from_settings(settings)
        app.state.producer = producer
        await publish_catalogue(producer)
        lag = asyncio.create_task(watch_loop_lag())
        try:
            yield
        finally:
            lag.cancel()
            await producer.close()

    app = FastAPI(
        title="taskgate",
        version=__version__,
        description="Submit slow work to Celery workers and ask how it went. "
        "Errors always come as `{\"error\": {\"type\", \"message\", \"retryable\"}}`.",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # served by docs.install, with no CDN
    )
    app.state.settings = settings
    app.state.auth = auth
    app.state.log_submits = log_submits
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    errors.install(app)
    docs.install(app)
    app.include_router(tutorial.router)
    app.include_router(tasks.build_router(catalogue))
    app.include_router(files.router)
    app.include_router(dead_letters.router)
    app.include_router(metrics.router)
    app.include_router(health.router)
    return app

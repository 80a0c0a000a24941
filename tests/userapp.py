"""A user's own FastAPI app, as the README's "Use it in your own FastAPI app" builds it, with
more of what users do: their own lifespan around taskgate's, their own auth on the router, and
their own Celery app with a plain task next to taskgate's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from celery import Celery
from fastapi import Depends, FastAPI, Header, HTTPException, Request

import taskgate
from taskgate.tasks.arithmetic import add

from . import sample_tasks

#: The user's own Celery app (its broker comes from TASKGATE_REDIS_URL when that is set), with
#: its own routes.
celery_app = Celery("userapp")
celery_app.conf.task_routes = {"userapp.*": {"queue": "userapp"}}


@celery_app.task(name="userapp.multiply")
def multiply(x: int, y: int) -> int:
    """A plain Celery task of the user's app."""
    return x * y


def build(redis_url: str | None = None, own: Celery | None = None,
          **settings: object) -> tuple[FastAPI, taskgate.Taskgate]:
    """The app and its Taskgate (``redis_url`` for tests; a user relies on TASKGATE_REDIS_URL).
    ``own``: another Celery app than the module's (one per Redis server)."""
    overrides = {"redis_url": redis_url, **settings} if redis_url else settings
    # The user's own auth names the owner of each request to the router (no API keys).
    tg = taskgate.Taskgate(celery_app=own or celery_app, owner=lambda request: request.state.user,
                           builtins=["add"], **overrides)  # the built-in add served too, alone

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.started = "yes"  # the user's own startup, around taskgate's
        async with tg.lifespan(app):
            yield
        app.state.started = "stopped"

    def token(request: Request, x_token: Annotated[str | None, Header()] = None,
              x_user: Annotated[str, Header()] = "anyone") -> None:
        if x_token != "let-me-in":
            raise HTTPException(403, "the user's own auth said no")
        request.state.user = x_user

    app = FastAPI(lifespan=lifespan)
    app.include_router(tg.router, prefix="/jobs", dependencies=[Depends(token)])
    tg.install_error_handlers(app)

    @app.get("/sum")
    async def sum_(x: int, y: int) -> dict[str, object]:
        job = await add.submit(x=x, y=y)
        return {"job_id": job.id, "result": await job.result(timeout=10)}

    @app.get("/sleep")
    async def sleep(seconds: float) -> dict[str, object]:
        job = await sample_tasks.sleepy.submit(seconds=seconds)
        return {"job_id": job.id, "state": (await job.status()).state}

    @app.get("/multiply")
    async def product(x: int, y: int) -> dict[str, object]:
        """The user's plain Celery task, sent the Celery way, next to taskgate's."""
        import asyncio

        result = multiply.delay(x, y)
        return {"result": await asyncio.to_thread(result.get, timeout=10)}

    @app.get("/started")
    async def started() -> dict[str, str]:
        return {"started": app.state.started}

    return app, tg

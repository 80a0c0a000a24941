"""taskgate's whole HTTP API as one ``APIRouter``: what ``Taskgate.router`` is, and what the
standalone ``taskgate api`` serves (see ``app``)."""

from __future__ import annotations

from fastapi import APIRouter

from ..registry import TaskSpec
from .errors import TaskgateRoute
from .routes import dead_letters, files, health, metrics, tasks, tutorial


def build_router(catalogue: dict[str, TaskSpec]) -> APIRouter:
    """Every endpoint, with a typed ``POST /tasks/{name}`` per task of ``catalogue``. Its routes
    find their Taskgate in ``app.state.taskgate`` (set by ``Taskgate.lifespan``)."""
    router = APIRouter(route_class=TaskgateRoute)
    router.include_router(tutorial.router)
    router.include_router(tasks.build_router(catalogue))
    router.include_router(files.router)
    router.include_router(dead_letters.router)
    router.include_router(metrics.router)
    router.include_router(health.router)
    return router

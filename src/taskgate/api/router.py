"""taskgate's whole HTTP API as one ``APIRouter``: what ``Taskgate.router`` is, and what the
standalone ``taskgate api`` serves (see ``app``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

from .errors import TaskgateRoute
from .routes import (
    bulk,
    dead_letters,
    files,
    health,
    limits,
    live,
    metrics,
    schedules,
    tasks,
    tutorial,
    ui,
    webhook_deliveries,
    webhooks,
    workflows,
)

if TYPE_CHECKING:
    from ..gate import Taskgate


def build_router(gate: Taskgate) -> APIRouter:
    """Every endpoint, with a typed ``POST /tasks/{name}`` per task ``gate`` serves now (one
    declared later is served too, by ``POST /tasks/{name}``'s catch-all, and listed); ``GET /add``
    when it serves a task named add, ``POST /files`` when it serves process_file. Each route hands
    its requests to ``gate`` (see :class:`.TaskgateRoute`), however the app opened it."""
    route_class = type("Route", (TaskgateRoute,), {"gate": gate, "direct": {}})
    router = APIRouter(route_class=route_class)
    catalogue = gate.catalogue
    if "add" in catalogue:
        router.include_router(tutorial.build_router(route_class))
    router.include_router(bulk.build_router(route_class))  # before POST /tasks/{name}
    router.include_router(tasks.build_router(catalogue, route_class))
    if "process_file" in catalogue:
        router.include_router(files.build_router(route_class))
    router.include_router(dead_letters.build_router(route_class))
    router.include_router(schedules.build_router(route_class))
    router.include_router(workflows.build_router(route_class))
    router.include_router(webhooks.build_router(route_class))
    router.include_router(webhook_deliveries.build_router(route_class))
    router.include_router(live.build_router(route_class))
    router.include_router(ui.build_router(route_class))
    router.include_router(metrics.build_router(route_class))
    router.include_router(limits.build_router(route_class))
    router.include_router(health.build_router(route_class))
    return router

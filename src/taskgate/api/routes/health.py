"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ...constants import RETRY_AFTER_SECONDS
from ..deps import ProducerDep
from ..errors import TaskgateRoute
from ..schemas import Health, Readiness


async def healthz() -> Health:
    """Answers at once; never touches Redis or the broker."""
    return Health()


async def readyz(producer: ProducerDep, response: Response) -> Readiness:
    """200 when the broker and the result backend answer within the deadline, else 503."""
    checks = await producer.check()
    if all(value == "ok" for value in checks.values()):
        return Readiness(status="ready", checks=checks)
    response.status_code = 503
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return Readiness(status="unavailable", checks=checks)


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(tags=["health"], route_class=route_class)
    router.get("/healthz", summary="The process is alive")(healthz)
    router.get("/readyz", summary="Broker and backend reachable",
               responses={503: {"model": Readiness, "description": "A component is unreachable."}})(readyz)
    return router

"""``GET /metrics`` for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ...producer.metrics import scrape
from ..deps import AdminDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import QueueInfo, errors


async def get_metrics(producer: ProducerDep, _admin: AdminDep) -> Response:
    """This replica's submits, Redis latency and event-loop lag; the cluster's completions by
    task and state, queue-wait and run-time histograms, queue depths, delayed tasks, dead
    letters and live workers. Needs an admin key when auth is on."""
    return Response(await scrape(producer.backend, producer.catalogue), media_type=CONTENT_TYPE_LATEST)


async def get_queues(producer: ProducerDep, _admin: AdminDep) -> list[QueueInfo]:
    """Each queue tasks are sent to or workers consume, with the messages waiting in it and
    the live workers consuming it. Needs an admin key when auth is on."""
    return [QueueInfo.model_validate(queue) for queue in await producer.queues()]


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(tags=["monitoring"], route_class=route_class)
    router.get("/metrics", summary="Prometheus metrics", response_class=Response,
               responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
                          **errors(401, 403, 503)})(get_metrics)
    router.get("/queues", summary="Queues, their depth and their workers",
               responses=errors(401, 403, 503))(get_queues)
    return router

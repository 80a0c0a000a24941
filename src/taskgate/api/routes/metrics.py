"""Monitoring: ``GET /metrics`` for Prometheus, and the queues, workers and summary the
dashboard shows."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ...producer.metrics import scrape
from ..deps import AdminDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import QueueInfo, Summary, WorkerInfo, errors


async def get_metrics(producer: ProducerDep, _admin: AdminDep) -> Response:
    """This replica's submits, Redis latency and event-loop lag; the cluster's completions by
    task and state, queue-wait and run-time histograms, queue depths, delayed tasks, dead
    letters and live workers. Needs an admin key when auth is on."""
    return Response(await scrape(producer.backend, producer.catalogue), media_type=CONTENT_TYPE_LATEST)


async def get_queues(producer: ProducerDep, _admin: AdminDep) -> list[QueueInfo]:
    """Each queue tasks are sent to or workers consume, with the messages waiting in it and
    the live workers consuming it. Needs an admin key when auth is on."""
    return [QueueInfo.model_validate(queue) for queue in await producer.queues()]


async def get_workers(producer: ProducerDep, _admin: AdminDep) -> list[WorkerInfo]:
    """The live workers: their queues, concurrency, running tasks and last heartbeat. Needs an
    admin key when auth is on."""
    return [WorkerInfo.model_validate(dataclasses.asdict(worker)) for worker in await producer.workers()]


async def get_summary(producer: ProducerDep, _admin: AdminDep) -> Summary:
    """What waits and runs now across the cluster, the tasks that ended in the last hour, and per
    minute over the last 15 the tasks that ended and their mean queue wait (the counts the
    workers keep in Redis, minutes on Redis's clock). Needs an admin key when auth is on."""
    return Summary.model_validate(dataclasses.asdict(await producer.summary()))


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(tags=["monitoring"], route_class=route_class)
    router.get("/metrics", summary="Prometheus metrics", response_class=Response,
               responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
                          **errors(401, 403, 503)})(get_metrics)
    router.get("/queues", summary="Queues, their depth and their workers",
               responses=errors(401, 403, 503))(get_queues)
    router.get("/workers", summary="Live workers", responses=errors(401, 403, 503))(get_workers)
    router.get("/summary", summary="What waits, runs and ended lately",
               responses=errors(401, 403, 503))(get_summary)
    return router

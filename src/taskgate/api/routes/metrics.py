"""Monitoring: ``GET /metrics`` for Prometheus, and the queues, workers and summary the
dashboard shows."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from ...producer.metrics import scrape
from ..deps import AdminDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import errors


class QueueInfo(BaseModel):
    """A queue, how much waits in it, and who consumes it."""

    name: str
    depth: int | None = Field(description="Messages waiting (null if the broker does not know it yet).")
    workers: list[str] = Field(description="Live workers consuming it (node name:pid).")
    lacking: dict[str, list[str]] = Field(
        default_factory=dict, description="Workers consuming it that lack some of the tasks this API "
        "sends to it (their module is missing from the worker's TASKGATE_TASK_MODULES): worker -> task "
        "names. Such tasks wait for a worker that has them, then fail as UnregisteredTask.")


class WorkerInfo(BaseModel):
    """A live worker, as its last heartbeat (every 2 s) says."""

    name: str = Field(description="node name:pid")
    queues: list[str] = Field(description="The queues it consumes.")
    concurrency: int = Field(description="How many tasks it runs at once (0: not known).")
    active: int = Field(description="How many it was running at its last heartbeat.")
    tasks: int = Field(description="How many tasks it can run (task types it has, not tasks it ran).")
    last_heartbeat: datetime


class MinuteInfo(BaseModel):
    """One minute: the tasks that ended in it, by state, and their mean queue wait."""

    at: datetime = Field(description="The minute's start.")
    succeeded: int
    failed: int
    cancelled: int
    expired: int = Field(description="Tasks not started before their expiry, ended `expired`.")
    wait_avg: float | None = Field(description="Mean seconds from submission to start of the tasks "
                                   "that ended in it and had started, to the millisecond (null: none had).")


class Summary(BaseModel):
    """The whole system now, and over the last hour."""

    queued: int | None = Field(description="Messages waiting in the queues (null while the broker "
                               "cannot tell).")
    delayed: int = Field(description="Tasks waiting for their countdown, eta or retry backoff.")
    running: int = Field(description="Tasks the live workers were running at their last heartbeat.")
    dead_letters: int
    workers: int = Field(description="Live workers.")
    concurrency: int = Field(description="Tasks the live workers can run at once, together.")
    last_hour: dict[str, int] = Field(description="Tasks that ended in the last hour, by state "
                                      "(succeeded, failed, cancelled, expired).")
    minutes: list[MinuteInfo] = Field(description="The last 15 minutes, oldest first (the current "
                                      "one last, still counting).")


async def get_metrics(producer: ProducerDep, _admin: AdminDep) -> Response:
    """This replica's submits, Redis latency and event-loop lag; the cluster's ended tasks by
    task and state, queue-wait and run-time histograms, webhook deliveries, queue depths,
    delayed tasks, dead letters and live workers (README's "Metrics" lists every name). Needs
    an admin key when auth is on."""
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

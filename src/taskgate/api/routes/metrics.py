"""``GET /metrics`` for Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ...metrics import scrape
from ..deps import AdminDep, GatewayDep
from ..schemas import errors

router = APIRouter(tags=["monitoring"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
                       **errors(401, 403, 503)})
async def get_metrics(gateway: GatewayDep, _admin: AdminDep) -> Response:
    """This replica's submits, Redis latency and event-loop lag; the cluster's completions by
    task and state, queue-wait and run-time histograms, queue depths, delayed tasks, dead
    letters and live workers. Needs an admin key when auth is on."""
    return Response(await scrape(gateway), media_type=CONTENT_TYPE_LATEST)

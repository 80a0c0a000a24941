"""RabbitMQ as the broker (results and records stay in Valkey): same endpoints, same truths."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from . import rabbit
from .helpers import start_api, start_worker, stop, wait_result

pytestmark = pytest.mark.skipif(not rabbit.available(),
                                reason="rabbitmq-server is not installed (make test installs it)")


@pytest.fixture(scope="module")
def rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rabbit.RabbitNode]:
    node = rabbit.RabbitNode()
    node.start()
    yield node
    node.remove()


@pytest.fixture(scope="module")
def amqp_api(rabbit_node: rabbit.RabbitNode, redis_url: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("amqp")
    worker = start_worker(redis_url, logs / "worker.log", TASKGATE_BROKER_URL=rabbit_node.url)
    proc, base = start_api(redis_url, logs / "api.log", TASKGATE_BROKER_URL=rabbit_node.url)
    yield base
    stop(proc)
    stop(worker)


def test_round_trip_through_rabbitmq(amqp_api: str) -> None:
    with httpx.Client(base_url=amqp_api, timeout=10) as client:
        assert client.get("/readyz").json()["checks"] == {"broker": "ok", "backend": "ok"}
        task_id = client.get("/add", params={"x": 4, "y": 5}).json()["task_id"]
        assert wait_result(client, task_id) == {"status": "completed", "result": 9}
        failed = client.get("/add", params={"x": 2**63 - 1, "y": 1}).json()["task_id"]
        assert wait_result(client, failed)["status"] == "failed"


def test_rabbitmq_down_gives_fast_503(redis_url: str, tmp_path: Path) -> None:
    node = rabbit.RabbitNode()
    node.start()
    proc, base = start_api(redis_url, tmp_path / "api.log", TASKGATE_BROKER_URL=node.url)
    try:
        assert httpx.get(base + "/add?x=1&y=2").status_code == 200
        node.stop()
        started = time.monotonic()
        response = httpx.get(base + "/add?x=1&y=2", timeout=10)
        seconds = time.monotonic() - started
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        assert seconds < 1.5, f"503 took {seconds:.2f}s"
        assert httpx.get(base + "/readyz", timeout=10).status_code == 503
    finally:
        stop(proc)
        node.remove()

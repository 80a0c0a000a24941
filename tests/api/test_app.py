"""The API in this process, driven through ``httpx.ASGITransport`` (lifespan included), against
the session's Valkey and its real worker: the routes over the producer, without a server."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from taskgate.api import create_app
from taskgate.config import Settings

from .. import helpers, sample_tasks  # noqa: F401  (declares the sample tasks in this process)


@asynccontextmanager
async def api(redis_url: str, **changes: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(redis_url=redis_url, task_modules=["tests.sample_tasks"],  # type: ignore[arg-type]
                        data_dir=helpers.DATA_DIR, **changes)
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://taskgate.test") as client:
        yield client


def run(redis_url: str, action: Callable[[httpx.AsyncClient], Awaitable[None]], **changes: object) -> None:
    async def main() -> None:
        async with api(redis_url, **changes) as client:
            await action(client)
    asyncio.run(main())


def test_the_tutorial_endpoints(redis_url: str, worker: object) -> None:
    async def action(client: httpx.AsyncClient) -> None:
        task_id = (await client.get("/add", params={"x": 4, "y": 5})).json()["task_id"]
        body = (await client.get(f"/tasks/{task_id}", params={"wait": 20})).json()
        assert (body["state"], body["result"]) == ("succeeded", 9)
        assert (await client.get(f"/result/{task_id}")).json() == {"status": "completed", "result": 9}
        assert (await client.get("/result/no-such-task")).status_code == 404
    run(redis_url, action)


def test_typed_submit_events_and_errors(redis_url: str, worker: object) -> None:
    async def action(client: httpx.AsyncClient) -> None:
        accepted = await client.post("/tasks/add", json={"x": 1, "y": 2})
        assert accepted.status_code == 202 and accepted.headers["location"].endswith(accepted.json()["task_id"])
        task_id = accepted.json()["task_id"]
        async with client.stream("GET", f"/tasks/{task_id}/events") as stream:
            events = [line async for line in stream.aiter_lines() if line.startswith("event:")]
        assert events[-1] == "event: state"
        results = (await client.post("/tasks/results", json={"task_ids": [task_id], "wait": 5})).json()
        assert results["tasks"][0]["result"] == 3
        bad = await client.post("/tasks/add", json={"x": "one"})
        assert bad.status_code == 422 and bad.json()["error"]["type"] == "invalid_request"
        unknown = await client.post("/tasks/nope", json={})
        assert unknown.status_code == 404 and set(unknown.json()["error"]) >= {"type", "message", "retryable"}
        assert (await client.delete(f"/tasks/{task_id}")).status_code == 204
        assert (await client.get(f"/tasks/{task_id}")).status_code == 404
    run(redis_url, action)


def test_redis_unreachable_is_a_503_with_retry_after(worker: object) -> None:
    async def action(client: httpx.AsyncClient) -> None:
        refused = await client.get("/add", params={"x": 1, "y": 1})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        error = refused.json()["error"]
        assert error["retryable"] is True
        assert f"task {error['task_id']} was not queued and will never run" in error["message"], error
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
    run("redis://127.0.0.1:1/0", action, backend_timeout=0.5)


def test_the_submit_routes_are_answered_directly_with_the_same_guards(redis_url: str, worker: object) -> None:
    """The service answers GET /add and POST /tasks/{name} without FastAPI's middleware and
    routing (``ServiceApp``), behind the routes' own guards: the same answers, errors included."""
    settings = Settings(redis_url=redis_url, task_modules=["tests.sample_tasks"],  # type: ignore[arg-type]
                        data_dir=helpers.DATA_DIR)
    app = create_app(settings)
    assert app.direct is not None and {("GET", "/add"), ("POST", "/tasks/add")} <= set(app.direct)
    through_fastapi: list[str] = []
    added_id: list[str] = []

    @app.middleware("http")
    async def note(request: Any, call_next: Any) -> Any:
        through_fastapi.append(f"{request.method} {request.url.path}")
        return await call_next(request)

    async def main() -> None:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://taskgate.test") as client:
            added = await client.get("/add", params={"x": 2, "y": 3})
            posted = await client.post("/tasks/add", json={"x": 1, "y": 1}, headers={"Idempotency-Key": "k1"})
            again = await client.post("/tasks/add", json={"x": 1, "y": 1}, headers={"Idempotency-Key": "k1"})
            bad = await client.get("/add", params={"x": "two", "y": 3})
            cross = await client.get("/add", params={"x": 1, "y": 1}, headers={"Sec-Fetch-Site": "cross-site"})
            big = await client.post("/tasks/add", content=b'{"x": 1, "y": 1' + b" " * 2_000_000 + b"}",
                                    headers={"Content-Type": "application/json"})
            added_id.append(added.json()["task_id"])
            status = await client.get(f"/tasks/{added_id[0]}", params={"wait": 20})
            assert added.status_code == 200 and status.json()["result"] == 5
            assert posted.status_code == 202 and posted.headers["location"] == f"/tasks/{posted.json()['task_id']}"
            assert again.json()["task_id"] == posted.json()["task_id"]
            assert again.headers["idempotent-replayed"] == "true"
            assert bad.status_code == 422 and bad.json()["error"]["type"] == "invalid_request"
            assert "x" in bad.json()["error"]["message"]
            assert cross.status_code == 403 and cross.json()["error"]["type"] == "forbidden"
            assert big.status_code == 413 and big.json()["error"]["type"] == "payload_too_large"
            assert (await client.head("/add", params={"x": 1, "y": 1})).status_code == 405  # FastAPI's answer
    asyncio.run(main())
    assert through_fastapi == [f"GET /tasks/{added_id[0]}", "HEAD /add"]


def test_fastapi_s_own_spans_leave_out_probes(redis_url: str) -> None:
    """With a tracer provider at start, FastAPI's own telemetry makes a SERVER span of each
    request but the probes' and the scraper's (GET /healthz, /readyz, /metrics)."""
    from .. import otel

    async def action(client: httpx.AsyncClient) -> None:
        for path in ("/healthz", "/readyz", "/metrics", "/tasks?limit=1"):
            assert (await client.get(path)).status_code == 200, path

    with otel.in_memory() as exporter:
        run(redis_url, action)
        servers = [span.name for span in exporter.get_finished_spans() if span.kind.name == "SERVER"]
    # FastAPI before its own telemetry (the lowest version allowed, 0.135) traces no route
    native = "telemetry" in inspect.signature(FastAPI.__init__).parameters
    assert servers == (["GET /tasks"] if native else []), servers

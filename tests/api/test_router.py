"""``tg.router`` and the library inside a user's own FastAPI app (``tests/userapp.py``), in
process through ``httpx.ASGITransport``, against the session's Valkey and a real worker."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from celery import Celery
from fastapi import FastAPI

import taskgate
from taskgate.tasks.arithmetic import add

from .. import helpers, inprocess, userapp

KEY = {"X-Token": "let-me-in"}


@pytest.fixture(scope="module")
def user_worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """A ``taskgate worker --tasks tests.userapp``: it runs the user's Celery app, which that
    module hands to taskgate, plain tasks included."""
    log = tmp_path_factory.mktemp("user-worker") / "worker.log"
    env = helpers.env_for(redis_url)
    proc = helpers.taskgate(["worker", "--concurrency=1", "--tasks=tests.userapp,tests.sample_tasks,tests.late_tasks",
                             "--name=userapp@%h", "--queues=default,userapp"], env, log)
    helpers.wait_for(lambda: b" ready." in log.read_bytes() or proc.poll() is not None, 60, "worker ready")
    assert proc.poll() is None, log.read_text()
    yield proc
    helpers.stop(proc)


@pytest.fixture(scope="module")
def user(redis_url: str, user_worker: object) -> Iterator[httpx.Client]:
    app, _ = userapp.build(redis_url, data_dir=helpers.DATA_DIR)
    with inprocess.serve(app) as http:
        yield http


def test_the_users_endpoint_submits_and_gets_the_typed_result(user: httpx.Client) -> None:
    answer = user.get("/sum", params={"x": 20, "y": 22})
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"] == 42
    assert user.get("/started").json() == {"started": "yes"}  # the user's lifespan ran around taskgate's


def test_the_router_under_a_prefix_guarded_by_the_users_dependency(user: httpx.Client) -> None:
    refused = user.post("/jobs/tasks/add", json={"x": 1, "y": 2})
    assert refused.status_code == 403 and "the user's own auth" in refused.text
    accepted = user.post("/jobs/tasks/add", json={"x": 1, "y": 2}, headers=KEY)
    assert accepted.status_code == 202, accepted.text
    location = accepted.headers["Location"]
    assert location == f"/jobs/tasks/{accepted.json()['task_id']}"
    done = user.get(location, params={"wait": 10}, headers=KEY).json()
    assert done["state"] == "succeeded" and done["result"] == 3
    assert user.get("/jobs/add", params={"x": 2, "y": 2}, headers=KEY).status_code == 200
    paths = user.get("/openapi.json").json()["paths"]
    assert {"/jobs/tasks/add", "/jobs/tasks/{task_id}", "/jobs/add", "/jobs/result/{task_id}",
            "/jobs/tasks/{task_id}/events", "/jobs/dead-letters", "/sum"} <= set(paths)
    assert not any(path.startswith("/tasks") for path in paths)


def test_the_users_auth_names_the_owner(user: httpx.Client) -> None:
    """``Taskgate(owner=...)``: the owner comes from the user's own auth, and each owner sees its
    own tasks only, as with API keys."""
    alice, bob = {**KEY, "X-User": "alice"}, {**KEY, "X-User": "bob"}
    task_id = user.post("/jobs/tasks/add", json={"x": 5, "y": 5}, headers=alice).json()["task_id"]
    assert user.get(f"/jobs/tasks/{task_id}", params={"wait": 10}, headers=alice).json()["owner"] == "alice"
    assert user.get(f"/jobs/tasks/{task_id}", headers=bob).status_code == 404
    listed = user.get("/jobs/tasks", params={"name": "add"}, headers=bob).json()["tasks"]
    assert task_id not in [task["task_id"] for task in listed]


def test_the_router_keeps_its_error_envelope_in_the_users_app(user: httpx.Client) -> None:
    missing = user.get("/jobs/tasks/no-such-id", headers=KEY)
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "task_not_found"
    bad = user.post("/jobs/tasks/add", json={"x": "one"}, headers=KEY)
    assert bad.status_code == 422 and "body field 'x'" in bad.json()["error"]["message"]


def test_a_plain_celery_task_of_the_users_app_runs_next_to_taskgates(user: httpx.Client) -> None:
    assert user.get("/multiply", params={"x": 6, "y": 7}).json() == {"result": 42}
    assert user.get("/sum", params={"x": 6, "y": 7}).json()["result"] == 13


def test_unavailable_in_the_users_routes_then_recovery(tmp_path: Path, user_worker: object) -> None:
    server = helpers.start_valkey(tmp_path / "valkey")
    app, _ = userapp.build(f"{server.connection_url}/0", own=Celery("down-and-up"), backend_timeout=1.0,
                           data_dir=helpers.DATA_DIR)
    port = server.port
    try:
        with inprocess.serve(app) as http:
            assert http.get("/sleep", params={"seconds": 0}).json()["state"] == "queued"
            server.stop()
            down = http.get("/sleep", params={"seconds": 0})
            assert down.status_code == 503 and down.headers["Retry-After"]
            assert down.json()["error"]["type"] == "backend_unavailable"
            router_down = http.get("/jobs/tasks/whatever", headers=KEY)
            assert router_down.status_code == 503 and router_down.headers["Retry-After"]
            server = helpers.ValkeyServer(port=port, data_dir=tmp_path / "valkey-again")
            server.start()
            assert http.get("/sleep", params={"seconds": 0}).json()["state"] == "queued"
            assert app.state.started == "yes"
        assert app.state.started == "stopped"
    finally:
        if server.is_running():
            server.stop()


def test_the_router_caps_bodies_in_the_users_app(redis_url: str) -> None:
    """No middleware of taskgate's in the user's app: the router's own cap answers 413, declared
    (Content-Length) or streamed (chunked, no length), on hand-read and FastAPI-read bodies alike."""
    app, _ = userapp.build(redis_url, max_body_bytes=1000, data_dir=helpers.DATA_DIR)
    big = b'{"x": 1, "y": 2, "pad": "' + b"x" * 2000 + b'"}'
    headers = {**KEY, "content-type": "application/json"}

    async def chunks() -> AsyncIterator[bytes]:
        yield big[:600]
        yield big[600:]

    async def main() -> list[tuple[str, httpx.Request, httpx.Response]]:
        answers = []
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://user.test") as http:
            for path in ("/jobs/tasks/add", "/jobs/tasks/add/batch"):
                for content in (big, chunks()):
                    answer = await http.post(path, content=content, headers=headers)
                    answers.append((path, answer.request, answer))
            small = await http.post("/jobs/tasks/add", json={"x": 1, "y": 2}, headers=KEY)
            answers.append(("small", small.request, small))
        return answers

    *refused, (_, _, small) = asyncio.run(main())
    assert small.status_code == 202
    assert ["content-length" in request.headers for _, request, _ in refused] == [True, False] * 2
    for path, _, answer in refused:
        assert answer.status_code == 413, (path, answer.text)
        assert answer.json()["error"]["type"] == "payload_too_large"
        assert "TASKGATE_MAX_BODY_BYTES" in answer.json()["error"]["message"]


def test_the_router_finds_its_taskgate_however_it_was_opened(redis_url: str, worker: object) -> None:
    """Opened with ``async with tg:`` in the user's own lifespan (no ``tg.lifespan``, so nothing in
    ``app.state``): the router's routes still reach their Taskgate."""
    tg = taskgate.Taskgate(redis_url=redis_url, auth=False, data_dir=helpers.DATA_DIR, builtins=["add"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with tg:
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(tg.router, prefix="/x")
    with inprocess.serve(app) as http:
        accepted = http.post("/x/tasks/add", json={"x": 2, "y": 5})
        assert accepted.status_code == 202, accepted.text
        assert http.get(accepted.headers["Location"], params={"wait": 10}).json()["result"] == 7


def test_a_task_declared_after_the_app_opened_is_served(redis_url: str, user_worker: object) -> None:
    """Its module imported after the router was built and the app opened: it is submitted over
    HTTP, listed in the catalogue (the dashboard's Submit page reads it), typed in ``tg.job(id)``,
    and published to the workers' catalogue."""
    import importlib
    import sys

    from redis import Redis

    from taskgate.records import keys

    assert "tests.late_tasks" not in sys.modules, "imported early: this test would prove nothing"
    app, tg = userapp.build(redis_url, data_dir=helpers.DATA_DIR)
    with inprocess.serve(app) as http:
        names = [task["name"] for task in http.get("/jobs/tasks/catalogue", headers=KEY).json()]
        assert "late_total" not in names and "add" in names
        assert http.post("/jobs/tasks/late_total", json={"values": [1]}, headers=KEY).status_code == 404
        late = importlib.import_module("tests.late_tasks")
        names = [task["name"] for task in http.get("/jobs/tasks/catalogue", headers=KEY).json()]
        assert "late_total" in names
        accepted = http.post("/jobs/tasks/late_total", json={"values": [1, 2, 3]}, headers=KEY)
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["Location"]
        assert location == f"/jobs/tasks/{accepted.json()['task_id']}"
        # on the shared default queue the session's worker (without tests.late_tasks) may take it
        # first and hand it back (2-3 s each time, see worker/consumer.py): wait up to 60 s
        for _ in range(3):
            done = http.get(location, params={"wait": 20}, headers=KEY).json()
            if done["state"] != "queued":
                break
        assert done["state"] == "succeeded" and done["result"] == {"total": 6, "count": 3}

        async def typed() -> object:
            return await (await tg.job(accepted.json()["task_id"])).result(timeout=10)

        assert asyncio.run(typed()) == late.Total(total=6, count=3)  # its model, not a dict
        client = Redis.from_url(redis_url)
        try:
            helpers.wait_for(lambda: client.hget(keys.CATALOGUE, "taskgate.late_total") is not None, 10,
                             "late_total published to the workers' catalogue")
        finally:
            client.close()


def _paths(tg: taskgate.Taskgate) -> set[str]:
    app = FastAPI()
    app.include_router(tg.router)
    return {f"{method.upper()} {path}" for path, operations in app.openapi()["paths"].items()
            for method in operations}


def test_a_library_taskgate_serves_only_the_users_tasks_and_the_builtins_asked_for() -> None:
    """No settings needed to build the router; the built-in tasks only on request; POST /files
    only with process_file; the service keeps every one, GET /add included."""
    from taskgate.api.app import create_app

    builtins = {"POST /tasks/add", "POST /tasks/send_email", "POST /tasks/count_primes",
                "POST /tasks/process_file", "POST /files", "GET /add"}
    default = _paths(taskgate.Taskgate(redis_url="redis://127.0.0.1:1/0"))
    assert "POST /tasks/sleepy" in default and "GET /tasks/catalogue" in default  # the user's tasks
    assert not default & builtins
    only_add = _paths(taskgate.Taskgate(redis_url="redis://127.0.0.1:1/0", builtins=["add"]))
    assert only_add & builtins == {"POST /tasks/add", "GET /add"}
    files = _paths(taskgate.Taskgate(redis_url="redis://127.0.0.1:1/0", builtins=["process_file"]))
    assert files & builtins == {"POST /tasks/process_file", "POST /files"}
    service = create_app(taskgate.Settings(redis_url="redis://127.0.0.1:1/0"))
    paths = {f"{method.upper()} {path}" for path, operations in service.openapi()["paths"].items()
             for method in operations}
    assert builtins <= paths


def test_builtins_not_asked_for_are_refused_at_run_time(user: httpx.Client) -> None:
    """The user's app asked for add alone: send_email cannot be submitted, scheduled or uploaded for."""
    names = {task["name"] for task in user.get("/jobs/tasks/catalogue", headers=KEY).json()}
    assert "add" in names and not names & {"send_email", "count_primes", "process_file"}
    refused = user.post("/jobs/tasks/send_email", json={"to": "a@example.com", "subject": "s", "body": "b"},
                        headers=KEY)
    assert refused.status_code == 404 and refused.json()["error"]["type"] == "unknown_task"
    scheduled = user.post("/jobs/schedules", json={"task": "send_email", "every": 60, "arguments": {
        "to": "a@example.com", "subject": "s", "body": "b"}}, headers=KEY)
    assert scheduled.status_code in (404, 422), scheduled.text
    assert user.post("/jobs/files", content=b"x", headers=KEY).status_code in (404, 405)


def _routes_awaiting_results(tg: taskgate.Taskgate, validation: bool = False) -> FastAPI:
    """README's ``/sum`` (awaiting ``job.result()`` in the app's own route) and two more like it."""
    from .. import sample_tasks

    app = FastAPI(lifespan=tg.lifespan)
    tg.install_error_handlers(app, validation=validation)

    @app.get("/sum")
    async def sum_(x: int, y: int, timeout: float = 10) -> dict[str, object]:  # noqa: ASYNC109
        job = await add.submit(x=x, y=y)
        return {"job_id": job.id, "result": await job.result(timeout=timeout)}

    @app.get("/fail")
    async def fail(message: str) -> dict[str, object]:
        job = await sample_tasks.boom.submit(message=message)
        return {"job_id": job.id, "result": await job.result(timeout=10)}

    @app.get("/cancelled")
    async def cancelled() -> dict[str, object]:
        job = await sample_tasks.sleepy.with_options(countdown=60).submit(seconds=1)
        await job.cancel()
        return {"job_id": job.id, "result": await job.result(timeout=10)}

    return app


def test_task_errors_in_the_users_routes(redis_url: str, worker: object) -> None:
    """``install_error_handlers``: a failed task is a 502 carrying its own error, a cancelled one
    a 409, each in the envelope with the task id; FastAPI's own 422 body is left alone."""
    tg = taskgate.Taskgate(redis_url=redis_url, data_dir=helpers.DATA_DIR)
    with inprocess.serve(_routes_awaiting_results(tg)) as http:
        assert http.get("/sum", params={"x": 1, "y": 2}).json()["result"] == 3
        failed = http.get("/fail", params={"message": "no luck"})
        assert failed.status_code == 502, failed.text
        error = failed.json()["error"]
        assert error["type"] == "task_failed" and error["task_id"] and error["retryable"] is False
        assert error["task_error"] == {"type": "ValueError", "message": "no luck", "retryable": False}
        cancelled = http.get("/cancelled")
        assert cancelled.status_code == 409, cancelled.text
        assert cancelled.json()["error"]["type"] == "task_cancelled" and cancelled.json()["error"]["task_id"]
        invalid = http.get("/sum", params={"x": "one", "y": 2})
        assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["query", "x"]
    asked = taskgate.Taskgate(redis_url=redis_url, data_dir=helpers.DATA_DIR)
    with inprocess.serve(_routes_awaiting_results(asked, validation=True)) as http:
        invalid = http.get("/sum", params={"x": "one", "y": 2})
        assert invalid.status_code == 422 and invalid.json()["error"]["type"] == "invalid_request"


def test_a_result_not_ready_in_the_users_route_is_a_504_with_the_task_id(own_redis_url: str) -> None:
    """No worker runs: README's ``/sum`` answers 504 naming the task, to ask for later."""
    tg = taskgate.Taskgate(redis_url=own_redis_url, data_dir=helpers.DATA_DIR)
    with inprocess.serve(_routes_awaiting_results(tg)) as http:
        late = http.get("/sum", params={"x": 1, "y": 2, "timeout": 0.5})
        assert late.status_code == 504, late.text
        error = late.json()["error"]
        assert error["type"] == "task_timeout" and "still queued" in error["message"]

        async def state() -> object:
            return (await (await tg.job(error["task_id"])).status()).state

        assert asyncio.run(state()) is taskgate.TaskState.QUEUED

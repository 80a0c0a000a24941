"""taskgate.tracing: its spans, their parents and attributes, and nothing without a provider."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import SpanKind, StatusCode
from redis import Redis

from taskgate import Taskgate, tracing
from taskgate.config import Settings
from taskgate.producer import Producer

from . import helpers, inprocess, otel
from .helpers import ROOT, kill, start_api, start_worker, stop, wait_for

REMOTE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_without_a_provider_nothing_is_traced() -> None:
    assert not tracing.active()
    with tracing.producer_span("add", "t1", "celery") as span:
        assert span is None
        headers: dict[str, str] = {}
        tracing.inject(headers)
        assert headers == {} and tracing.record_ids() == {}
    assert tracing.link("0af7651916cd43dd8448eb211c80319c") is None
    with tracing.consumer_span(SimpleNamespace(traceparent=REMOTE), "add", "t1", "celery", attempt=1) as span:
        assert span is None
        tracing.event("taskgate.progress", {"taskgate.progress.percent": 50.0})  # no span: nothing, no error


def test_without_opentelemetry_installed_every_function_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    spec = importlib.util.spec_from_file_location("taskgate._bare_tracing", tracing.__file__)
    assert spec is not None and spec.loader is not None
    bare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bare)
    assert not bare.INSTALLED and not bare.active() and bare.record_ids() == {}
    headers: dict[str, str] = {}
    with bare.producer_span("add", "t1", "celery") as span, \
            bare.consumer_span(object(), "add", "t1", "celery", attempt=1):
        bare.inject(headers)
        bare.event("x")
        bare.failed(ValueError())
    assert span is None and headers == {} and bare.link("1" * 32) is None


def test_producer_span_is_the_request_span_child_and_travels_in_headers() -> None:
    with otel.in_memory() as exporter:
        assert tracing.active()
        outer = trace.get_tracer("app").start_span("request", kind=SpanKind.SERVER)
        with trace.use_span(outer, end_on_exit=True), \
                tracing.producer_span("add", "t1", "fast", owner="alice") as span:
            assert span is not None
            headers: dict[str, str] = {}
            tracing.inject(headers)
            produced = span.get_span_context()
            assert headers["traceparent"].startswith(f"00-{produced.trace_id:032x}-{produced.span_id:016x}-")
            assert tracing.record_ids() == {"trace_id": f"{outer.get_span_context().trace_id:032x}",
                                            "span_id": f"{produced.span_id:016x}"}, "the submit's own span"
        submit, request = exporter.get_finished_spans()
    assert submit.name == "taskgate submit add" and submit.kind is SpanKind.PRODUCER
    assert submit.parent is not None and submit.parent.span_id == request.context.span_id
    assert dict(submit.attributes or {}) == {
        "messaging.system": "celery", "messaging.destination.name": "fast", "messaging.message.id": "t1",
        "messaging.operation.type": "send", "taskgate.task.name": "add", "taskgate.owner": "alice"}
    assert not tracing.active()  # the provider was unset with the test


def test_producer_span_roots_remote_parents_and_links() -> None:
    linked = "1" * 32
    with otel.in_memory() as exporter:
        with tracing.producer_span("add", "t1", "celery", parent={"traceparent": REMOTE}):
            pass
        with tracing.producer_span("add", "t2", "celery", root=True,
                                   links=[tracing.link(linked, attributes={"taskgate.schedule_id": "s1"}),
                                          tracing.link("not hex")]):
            pass
        with tracing.producer_span("add", "t3", "celery"), \
                tracing.producer_span("add", "t3", "celery", parent=SimpleNamespace(traceparent=REMOTE)):
            pass
        child, root, attributed, _ = exporter.get_finished_spans()
    assert child.parent is not None and f"{child.parent.span_id:016x}" == "b7ad6b7169203331"
    assert f"{child.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert root.parent is None and len(root.links) == 1
    assert f"{root.links[0].context.trace_id:032x}" == linked
    assert dict(root.links[0].attributes or {}) == {"taskgate.schedule_id": "s1", "taskgate.trace_id": linked}
    assert attributed.parent is not None and f"{attributed.parent.span_id:016x}" == "b7ad6b7169203331"


def test_consumer_span_continues_the_message_trace() -> None:
    request = SimpleNamespace(traceparent=REMOTE)
    with otel.in_memory() as exporter:
        with tracing.consumer_span(request, "add", "t1", "celery", attempt=2, owner="bob"):
            tracing.event("taskgate.progress", {"taskgate.progress.percent": 50.0})
            tracing.annotate(taskgate__owner="carol")
            try:
                raise ValueError("bad")
            except ValueError as exc:
                tracing.failed(exc)
        (run,) = exporter.get_finished_spans()
    assert run.name == "taskgate run add" and run.kind is SpanKind.CONSUMER
    assert run.parent is not None and f"{run.parent.span_id:016x}" == "b7ad6b7169203331"
    attributes = dict(run.attributes or {})
    assert attributes["messaging.operation.type"] == "process" and attributes["taskgate.attempt"] == 2
    assert attributes["taskgate.owner"] == "carol"
    assert [event.name for event in run.events] == ["taskgate.progress", "exception"]
    assert run.status.status_code is StatusCode.ERROR


def test_server_span_honours_traceparent() -> None:
    scope = {"type": "http", "method": "POST", "path": "/tasks/add", "scheme": "http",
             "server": ("127.0.0.1", 8000), "headers": [(b"traceparent", REMOTE.encode())]}
    with otel.in_memory() as exporter:
        with tracing.server_span(scope, "/tasks/add") as span:
            assert span is not None
            tracing.responded(span, 202)
        (served,) = exporter.get_finished_spans()
    assert served.name == "POST /tasks/add" and served.kind is SpanKind.SERVER
    assert served.parent is not None and f"{served.parent.span_id:016x}" == "b7ad6b7169203331"
    assert (served.attributes or {})["http.response.status_code"] == 202


def wait(http: httpx.Client, path: str, done: Callable[[Any], bool], timeout: float = 30) -> Any:
    """GET ``path`` until ``done(body)``; that body."""
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(path).json()
        if done(body) or time.monotonic() > deadline:
            assert done(body), body
            return body
        time.sleep(0.05)


# --- real processes: one trace from a request, through the queue, to the worker's runs ----------

@pytest.fixture(scope="module")
def receiver() -> Iterator[otel.Receiver]:
    """A local OTLP/HTTP receiver the module's processes export to."""
    received = otel.Receiver()
    yield received
    received.close()


def traced_env(receiver: otel.Receiver, queue: str) -> dict[str, str]:
    """TASKGATE_OTEL=on, exporting to ``receiver`` within 50 ms, on a queue of the test's own."""
    return {"TASKGATE_OTEL": "on", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50", "TASKGATE_DEFAULT_QUEUE": queue}


def test_one_trace_from_the_request_through_the_queue_to_each_run(redis_url: str, receiver: otel.Receiver,
                                                                    tmp_path: Path) -> None:
    env = traced_env(receiver, f"traced-{uuid.uuid4()}")
    worker = start_worker(redis_url, tmp_path / "worker.log", **env)
    api, base = start_api(redis_url, tmp_path / "api.log", **env)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            accepted = http.post("/tasks/flaky", json={"counter": str(tmp_path / "count"), "failures": 1},
                                 headers={"traceparent": REMOTE})
            assert accepted.status_code == 202, accepted.text
            task_id = accepted.json()["task_id"]
            body = wait(http, f"/tasks/{task_id}", lambda task: task["state"] == "succeeded")
    finally:
        stop(api)
        stop(worker)
    trace_id = REMOTE.split("-")[1]
    assert body["trace_id"] == trace_id
    submit = receiver.named("taskgate submit flaky")
    receiver.wait(lambda spans: sum(span.name == "taskgate run flaky" for span in spans) == 2)
    first, second = sorted((span for span in receiver.spans if span.name == "taskgate run flaky"),
                           key=lambda span: span.attributes["taskgate.attempt"])
    (server,) = [span for span in receiver.spans if span.span_id == submit.parent_id]
    assert {span.trace_id for span in (server, submit, first, second)} == {trace_id}
    assert (server.kind, server.parent_id, server.service) == ("SERVER", REMOTE.split("-")[2], "taskgate-api")
    assert (server.name, server.attributes["http.response.status_code"]) == ("POST /tasks/flaky", 202)
    assert (submit.kind, submit.attributes["messaging.message.id"]) == ("PRODUCER", task_id)
    assert (first.kind, first.parent_id, first.service) == ("CONSUMER", submit.span_id, "taskgate-worker")
    assert first.attributes["messaging.destination.name"] == env["TASKGATE_DEFAULT_QUEUE"]
    assert (first.attributes["messaging.system"], first.attributes["messaging.message.id"]) == ("celery", task_id)
    assert first.status == "ERROR" and first.events == ["exception", "taskgate.retry"]
    assert (second.parent_id, second.attributes["taskgate.attempt"], second.status) == (first.span_id, 2, "UNSET")


def test_a_user_app_s_request_span_is_the_submit_span_s_parent(redis_url: str) -> None:
    queue = f"traced-{uuid.uuid4()}"  # consumed by no worker
    redis = Redis.from_url(redis_url)
    try:
        with otel.in_memory() as exporter:
            tg = Taskgate(redis_url=redis_url, data_dir=helpers.DATA_DIR, default_queue=queue, builtins=["add"],
                          auth=False)
            app = FastAPI(lifespan=tg.lifespan)
            app.include_router(tg.router)
            FastAPIInstrumentor.instrument_app(app)  # the app's own instrumentation, as users add it
            with inprocess.serve(app) as http:
                accepted = http.post("/tasks/add", json={"x": 1, "y": 2})
                assert accepted.status_code == 202, accepted.text
                task_id = accepted.json()["task_id"]
                stored = http.get(f"/tasks/{task_id}").json()
            spans = exporter.get_finished_spans()
    finally:
        redis.delete(queue)
        redis.close()
    (submit,) = [span for span in spans if span.name == "taskgate submit add"]
    (request,) = [span for span in spans if span.kind is SpanKind.SERVER and span.name == "POST /tasks/add"]
    assert submit.parent is not None and submit.parent.span_id == request.context.span_id
    assert stored["trace_id"] == f"{request.context.trace_id:032x}"


def test_a_plain_celery_worker_with_its_instrumentation_continues_the_trace(
        redis_url: str, receiver: otel.Receiver, tmp_path: Path) -> None:
    queue = f"traced-{uuid.uuid4()}"
    log, worker_log = tmp_path / "calls", tmp_path / "worker.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("TASKGATE_", "OTEL_"))},
           "PLAIN_BROKER_URL": redis_url, "PLAIN_LOG": str(log), "PYTHONPATH": str(ROOT),
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
    with worker_log.open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tests.traced_celery_app", "worker",
                                   "--pool=solo", f"--queues={queue}", "--without-gossip", "--without-mingle",
                                   "--loglevel=INFO"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: b" ready." in worker_log.read_bytes() or worker.poll() is not None, 60,
                 "celery worker ready")
        assert worker.poll() is None, worker_log.read_text()

        async def submit() -> None:
            producer = Producer.from_settings(Settings(redis_url=redis_url, default_queue=queue))
            try:
                spec = producer.spec("add")
                await producer.submitter.submit(spec, spec.args_model(x=2, y=3))
            finally:
                await producer.close()

        with otel.in_memory() as exporter:
            asyncio.run(submit())
            (produced,) = exporter.get_finished_spans()
        ran = receiver.named("run/taskgate.add")
    finally:
        kill(worker.pid, signal.SIGKILL)
        worker.wait()
    assert log.read_text() == "2+3\n"
    assert (ran.kind, ran.service) == ("CONSUMER", "plain-celery")
    assert (ran.trace_id, ran.parent_id) == (f"{produced.context.trace_id:032x}",
                                             f"{produced.context.span_id:016x}")


def test_a_run_s_span_has_progress_milestones_and_cancel_as_events(redis_url: str, receiver: otel.Receiver,
                                                                    tmp_path: Path) -> None:
    """Real processes: a run reporting progress about every 0.2 s for 2 s has one
    ``taskgate.progress`` event per quarter it reached (25, 50, 75 %; not one per report), and
    a run cancelled while running has ``taskgate.cancel_requested`` then ``taskgate.cancelled``."""
    env = traced_env(receiver, f"traced-{uuid.uuid4()}")
    worker = start_worker(redis_url, tmp_path / "worker.log", **env)
    api, base = start_api(redis_url, tmp_path / "api.log", **env)
    started = tmp_path / "started"
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            progressed = helpers.submit(http, "sleepy", {"seconds": 2})
            assert helpers.wait(http, progressed, 30)["state"] == "succeeded"
            cancelled = helpers.submit(http, "sleepy", {"seconds": 60, "started_file": str(started)})
            wait_for(started.exists, 30, "the long sleepy to start")
            assert http.post(f"/tasks/{cancelled}/cancel").status_code == 200
            assert helpers.wait(http, cancelled, 30)["state"] == "cancelled"
    finally:
        stop(api)
        stop(worker)

    def run_of(task_id: str) -> otel.Received | None:
        return next((span for span in receiver.spans if span.name == "taskgate run sleepy"
                     and span.attributes["messaging.message.id"] == task_id), None)

    receiver.wait(lambda _: run_of(progressed) is not None and run_of(cancelled) is not None)
    progress, cancel = run_of(progressed), run_of(cancelled)
    assert progress is not None and cancel is not None
    assert progress.kind == "CONSUMER" and 1 <= len(progress.events) <= 3, progress.events
    assert set(progress.events) == {"taskgate.progress"}, progress.events
    assert cancel.events[-2:] == ["taskgate.cancel_requested", "taskgate.cancelled"], cancel.events
    assert set(cancel.events[:-2]) <= {"taskgate.progress"}, cancel.events



def test_a_replay_s_submit_links_to_the_run_it_replays(redis_url: str, receiver: otel.Receiver,
                                                        tmp_path: Path) -> None:
    """Real processes: a replay's submit is the replaying request's child (its own trace),
    linked to the submit span of the run it replays; its run continues the replay's trace."""
    env = traced_env(receiver, f"traced-{uuid.uuid4()}")
    worker = start_worker(redis_url, tmp_path / "worker.log", **env)
    api, base = start_api(redis_url, tmp_path / "api.log", **env)
    original_trace, replay_trace = uuid.uuid4().hex, uuid.uuid4().hex
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            first = http.post("/tasks/add", json={"x": 1, "y": 2},
                              headers={"traceparent": f"00-{original_trace}-b7ad6b7169203331-01"})
            original = first.json()["task_id"]
            assert helpers.wait(http, original)["state"] == "succeeded"
            again = http.post(f"/tasks/{original}/replay",
                              headers={"traceparent": f"00-{replay_trace}-b7ad6b7169203331-01"})
            assert again.status_code == 202, again.text
            replayed = again.json()["task_id"]
            assert helpers.wait(http, replayed)["state"] == "succeeded"
            assert http.get(f"/tasks/{replayed}").json()["trace_id"] == replay_trace
    finally:
        stop(api)
        stop(worker)
    receiver.wait(lambda spans: any(span.name == "taskgate run add" and span.attributes["messaging.message.id"]
                                    == replayed for span in spans))
    (replay,) = [span for span in receiver.spans if span.name == "taskgate submit add"
                 and span.attributes["messaging.message.id"] == replayed]
    assert (replay.trace_id, replay.kind) == (replay_trace, "PRODUCER") and replay.parent_id
    (first_submit,) = [span for span in receiver.spans if span.name == "taskgate submit add"
                       and span.attributes["messaging.message.id"] == original]
    assert replay.links == [f"{original_trace}:{first_submit.span_id}"], "to the submit span the record keeps"
    (run,) = [span for span in receiver.spans if span.name == "taskgate run add"
              and span.attributes["messaging.message.id"] == replayed]
    assert (run.trace_id, run.parent_id) == (replay_trace, replay.span_id)


def test_each_tick_of_a_schedule_is_a_trace_of_its_own_linked_to_the_schedule(
        own_redis_url: str, receiver: otel.Receiver, tmp_path: Path) -> None:
    """Real processes (a prefork worker, whose keeper fires ticks in its main process, not in a
    pool process): each tick of a schedule created in a traced request is a root PRODUCER span
    of the worker's, a new trace per tick, linked to the span that created the schedule; its run
    is the tick's child. A private Valkey: no other test's worker fires the schedule."""
    env = traced_env(receiver, f"traced-{uuid.uuid4()}")
    worker = start_worker(own_redis_url, tmp_path / "worker.log", **env)
    api, base = start_api(own_redis_url, tmp_path / "api.log", **env)
    created_in = uuid.uuid4().hex

    def ticks() -> list[otel.Received]:
        return sorted((span for span in receiver.spans if span.name == "taskgate submit add"
                       and span.attributes.get("taskgate.schedule.id") == schedule_id),
                      key=lambda span: span.start_ns)

    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            made = http.post("/schedules", json={"task": "add", "arguments": {"x": 3, "y": 4}, "every": 1},
                             headers={"traceparent": f"00-{created_in}-b7ad6b7169203331-01"})
            assert made.status_code == 201, made.text
            schedule_id = made.json()["schedule_id"]
            receiver.wait(lambda _: len(ticks()) >= 2)
            assert http.delete(f"/schedules/{schedule_id}").status_code in (200, 204)
    finally:
        stop(api)
        stop(worker)
    # the request's spans: its SERVER span and FastAPI's inside it, the endpoint's creating it
    request = {span.span_id for span in receiver.spans if span.trace_id == created_in}
    first, second = ticks()[:2]
    for tick in (first, second):
        assert (tick.kind, tick.parent_id, tick.service) == ("PRODUCER", "", "taskgate-worker"), tick
        ((linked_trace, linked_span),) = [link.split(":") for link in tick.links]
        assert linked_trace == created_in and linked_span in request, (tick.links, request)
        assert tick.attributes["taskgate.schedule.verdict"] == "fired"
    assert len({created_in, first.trace_id, second.trace_id}) == 3, "a new trace per tick"
    receiver.wait(lambda spans: {tick.span_id for tick in (first, second)} <= {
        span.parent_id for span in spans if span.name == "taskgate run add"})
    for tick in (first, second):
        (run,) = [span for span in receiver.spans if span.name == "taskgate run add"
                  and span.parent_id == tick.span_id]
        assert (run.kind, run.trace_id, run.service) == ("CONSUMER", tick.trace_id, "taskgate-worker")
        assert run.attributes["messaging.message.id"] == tick.attributes["messaging.message.id"]


def test_a_worker_s_main_process_exports_its_tick_spans_as_it_stops(own_redis_url: str, receiver: otel.Receiver,
                                                                     tmp_path: Path) -> None:
    """Spans wait in each process's batch (here longer than the test): the worker's main
    process exports its ticks' as it stops, and its pool processes their runs'."""
    env = {**traced_env(receiver, f"traced-{uuid.uuid4()}"), "OTEL_BSP_SCHEDULE_DELAY": "600000"}
    worker = start_worker(own_redis_url, tmp_path / "worker.log", **env)
    api, base = start_api(own_redis_url, tmp_path / "api.log", **env)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            made = http.post("/schedules", json={"task": "add", "arguments": {"x": 3, "y": 4}, "every": 1})
            assert made.status_code == 201, made.text
            schedule_id = made.json()["schedule_id"]
            fired = wait(http, f"/schedules/{schedule_id}", lambda body: body["last_task_id"])["last_task_id"]
            assert helpers.wait(http, fired)["state"] == "succeeded"
            assert http.delete(f"/schedules/{schedule_id}").status_code in (200, 204)
        assert not [span for span in receiver.spans if span.attributes.get("messaging.message.id") == fired]
    finally:
        stop(api)
        stop(worker)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()
    (tick,) = [span for span in receiver.spans if span.name == "taskgate submit add"
               and span.attributes["messaging.message.id"] == fired]
    (run,) = [span for span in receiver.spans if span.name == "taskgate run add"
              and span.attributes["messaging.message.id"] == fired]
    assert (tick.parent_id, tick.attributes["taskgate.schedule.id"]) == ("", schedule_id)
    assert (run.trace_id, run.parent_id) == (tick.trace_id, tick.span_id)

"""The webhook sender (``worker/webhooks.py``) against a real Valkey, real workers and a local
receiver (``receiver.py``), every delivery verified with the ``standardwebhooks`` library.

Each test has its own Valkey and starts its workers (``stack``): a worker's deliverer claims
whatever is due in its Redis. The first test goes end to end (a subscription made over HTTP, a
run's end); the others write subscriptions and deliveries by hand, as the API and the end script
write them. The workers run with TASKGATE_WEBHOOK_ALLOW_HTTP and TASKGATE_WEBHOOK_ALLOW_PRIVATE (the
receiver is http://127.0.0.1), except the one checking that the send-time guard refuses it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from redis import Redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from taskgate.config import Settings
from taskgate.records import keys, webhooks
from taskgate.worker.webhook_process import DelivererProcess
from taskgate.worker.webhooks import Deliverer

from .. import otel
from ..helpers import Stack, env_for, free_port, stop, submit, wait, wait_for
from .receiver import HANG, Received, deliver, ended_record, fields, receiving, subscribe

#: Short retry delays (s), so a test sees the schedule through.
SCHEDULE = "0.3,0.3,0.3"
#: Both guards off, for a receiver on loopback over http.
OPEN = {"TASKGATE_WEBHOOK_ALLOW_HTTP": "1", "TASKGATE_WEBHOOK_ALLOW_PRIVATE": "1",
        "TASKGATE_WEBHOOK_SCHEDULE": SCHEDULE}


def verified(request: Received, secret: str) -> dict[str, object]:
    """The request's body, once ``standardwebhooks`` accepts its signature with ``secret``."""
    body: dict[str, object] = Webhook(secret).verify(request.body, request.headers)
    return body


def ended(redis: Redis, key: str) -> dict[str, str]:
    """The delivery's fields once it is no longer pending."""
    wait_for(lambda: fields(redis, key).get("state") in ("delivered", "failed"), 40, f"{key} to end")
    return fields(redis, key)


def test_a_run_end_is_delivered_signed_with_the_task_as_the_api_shows_it(stack: Stack) -> None:
    """End to end: a subscription made with POST /webhooks, a real run's end written to the
    outbox by the script that ended it, sent by the worker."""
    stack.env.update(OPEN)
    stack.start_worker()
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    with receiving() as receiver:
        made = client.post("/webhooks", json={"url": receiver.url("/hook"), "events": ["task.succeeded"]})
        assert made.status_code == 201, made.text
        webhook_id, secret = made.json()["id"], made.json()["secret"]
        assert wait(client, submit(client, "boom", {"message": "not subscribed to"}))["state"] == "failed"
        task_id = submit(client, "add", {"x": 2, "y": 3})
        shown = wait(client, task_id)
        assert shown["state"] == "succeeded"
        msg_id = f"msg_{task_id}_succeeded"
        delivery = ended(redis, keys.delivery(webhooks.delivery_id(webhook_id, msg_id)))
        (request,) = receiver.at("/hook")
    assert delivery["state"] == "delivered" and delivery["attempts"] == "1" and delivery["last_status"] == "200"
    key = keys.delivery(webhooks.delivery_id(webhook_id, msg_id))
    assert 0 < redis.ttl(key) <= 7 * 86_400  # kept TASKGATE_FAILURE_TTL once it ended
    assert redis.zscore(keys.WEBHOOK_DUE, key) is None
    body = verified(request, secret)
    assert request.headers["webhook-id"] == msg_id
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 30
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("taskgate/")
    assert body["type"] == "task.succeeded"
    assert body["data"] == shown  # GET /tasks/{task_id}, field for field
    assert request.body.endswith(b',"data":' + client.get(f"/tasks/{task_id}").content + b"}")  # byte for byte
    metrics = client.get("/metrics").text
    assert 'taskgate_webhook_deliveries_total{outcome="delivered"} 1.0' in metrics


def test_failed_attempts_are_retried_with_the_same_id_then_fail_when_the_schedule_is_spent(stack: Stack) -> None:
    stack.env.update(OPEN)
    stack.start_worker()
    redis = Redis.from_url(stack.url)
    with receiving() as receiver:
        flaky, flaky_secret = subscribe(redis, receiver.plan("/flaky", 500, HANG, 200))
        broken, broken_secret = subscribe(redis, receiver.plan("/broken", 503))
        flaky_key, flaky_msg = deliver(redis, flaky)
        broken_key, broken_msg = deliver(redis, broken)
        delivered = ended(redis, flaky_key)
        failed = ended(redis, broken_key)
        tries, refusals = receiver.at("/flaky"), receiver.at("/broken")
    # a 500, a timeout (no answer within 10 s), then delivered: three attempts, one webhook-id
    assert delivered["state"] == "delivered" and delivered["attempts"] == "3", delivered
    assert [request.headers["webhook-id"] for request in tries] == [flaky_msg] * 3
    assert len({verified(request, flaky_secret)["timestamp"] for request in tries}) == 1  # one event
    assert tries[2].at - tries[1].at >= 9.5  # the sender waited out its timeout
    # the first attempt and one per delay of the schedule, each answered 503: failed
    assert failed["state"] == "failed" and failed["attempts"] == "4" and failed["last_status"] == "503", failed
    assert [request.headers["webhook-id"] for request in refusals] == [broken_msg] * 4
    for request in refusals:
        verified(request, broken_secret)
    assert redis.zscore(keys.WEBHOOK_DUE, broken_key) is None
    # a failing subscription stays enabled (for days: see test_webhook_delivery_scripts), its
    # streak recorded; a delivery ends it
    assert fields(redis, keys.webhook(broken))["enabled"] == "1"
    assert "failing_since" in fields(redis, keys.webhook(broken))
    assert "failing_since" not in fields(redis, keys.webhook(flaky))
    stats = fields(redis, keys.STATS)
    assert (stats["webhook:delivered"], stats["webhook:retrying"], stats["webhook:failed"]) == ("1", "5", "1")


def test_410_gone_disables_the_subscription_and_its_other_deliveries_are_not_sent(stack: Stack) -> None:
    stack.env.update(OPEN)
    stack.start_worker()
    redis = Redis.from_url(stack.url)
    with receiving() as receiver:
        webhook_id, secret = subscribe(redis, receiver.plan("/gone", 410))
        key, _ = deliver(redis, webhook_id)
        assert ended(redis, key)["state"] == "failed"
        subscription = fields(redis, keys.webhook(webhook_id))
        assert subscription["enabled"] == "0" and "410 Gone" in subscription["disabled_reason"]
        later, _ = deliver(redis, webhook_id)
        dropped = ended(redis, later)
        assert len(receiver.at("/gone")) == 1
    verified(receiver.at("/gone")[0], secret)
    assert dropped["state"] == "failed" and dropped["attempts"] == "0"
    assert dropped["last_error"].startswith("not sent: its subscription is disabled: the receiver answered 410")


def test_the_previous_secret_signs_too_while_it_is_valid(stack: Stack) -> None:
    stack.env.update(OPEN)
    stack.start_worker()
    redis = Redis.from_url(stack.url)
    old, new = webhooks.new_secret(), webhooks.new_secret()
    with receiving() as receiver:
        rotated, _ = subscribe(redis, receiver.url("/rotated"), secret=new, previous=old,
                               previous_until=time.time() + 3600)
        lapsed, _ = subscribe(redis, receiver.url("/lapsed"), secret=new, previous=old,
                              previous_until=time.time() - 1)
        for webhook_id in (rotated, lapsed):
            assert ended(redis, deliver(redis, webhook_id)[0])["state"] == "delivered"
        (during,), (after,) = receiver.at("/rotated"), receiver.at("/lapsed")
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert verified(during, old) == verified(during, new)  # a receiver with either secret accepts it
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    verified(after, new)
    with pytest.raises(WebhookVerificationError):
        verified(after, old)


def test_a_private_address_is_refused_at_send_time(stack: Stack) -> None:
    """With TASKGATE_WEBHOOK_ALLOW_PRIVATE off (http still allowed), a subscription to
    127.0.0.1 (stored by hand, as if its host resolved elsewhere when it was made) is never
    called: each attempt fails before it connects."""
    stack.start_worker(TASKGATE_WEBHOOK_ALLOW_HTTP="1", TASKGATE_WEBHOOK_SCHEDULE="0.2")
    redis = Redis.from_url(stack.url)
    with receiving() as receiver:
        webhook_id, _ = subscribe(redis, receiver.url("/inside"))
        key, _ = deliver(redis, webhook_id)
        delivery = ended(redis, key)
        assert receiver.at("/inside") == []
    assert delivery["state"] == "failed" and delivery["attempts"] == "2"
    assert "loopback" in delivery["last_error"] and "last_status" not in delivery


def start_worker_group(stack: Stack, name: str) -> subprocess.Popen[bytes]:
    """A worker in a process group of its own, so the test can kill all of it at once."""
    log = stack.tmp / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "taskgate", "worker", "--concurrency=1"],
                                env=env_for(stack.url, **stack.env), stdout=out, stderr=subprocess.STDOUT,
                                cwd=log.parent, start_new_session=True)
    stack.workers.append(proc)  # killed by the stack at the end, should the test fail first
    wait_for(lambda: b" ready." in log.read_bytes() or proc.poll() is not None, 60, f"{name} ready")
    assert proc.poll() is None, log.read_text()
    return proc


def test_a_worker_killed_holding_a_delivery_loses_nothing(stack: Stack) -> None:
    """Worker A claims the delivery and is SIGKILLed (its whole process group) while the
    receiver holds the request: no outcome recorded. Once A's lease ends, worker B sends it
    again, with the same webhook-id. The lease is the delivery's score in the due set (60 s
    ahead, checked); its end is brought forward by setting that score to now, as the passing
    of those 60 s would."""
    stack.env.update(OPEN)
    first = start_worker_group(stack, "first")
    redis = Redis.from_url(stack.url)
    with receiving() as receiver:
        webhook_id, secret = subscribe(redis, receiver.plan("/held", HANG, 200))
        key, msg_id = deliver(redis, webhook_id)
        wait_for(lambda: len(receiver.at("/held")) == 1, 20, "the first attempt")
        leased = redis.zscore(keys.WEBHOOK_DUE, key)
        assert leased is not None and leased > time.time() * 1000 + 50_000  # claimed for 60 s
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert fields(redis, key)["state"] == "pending" and fields(redis, key)["attempts"] == "0"
        stack.start_worker()
        redis.zadd(keys.WEBHOOK_DUE, {key: time.time() * 1000}, xx=True)  # the lease ends
        wait_for(lambda: fields(redis, key)["state"] != "pending", 30, "the delivery sent again after the lease")
        delivery, tries = fields(redis, key), receiver.at("/held")
    assert delivery["state"] == "delivered" and delivery["attempts"] == "1", delivery
    assert [request.headers["webhook-id"] for request in tries] == [msg_id, msg_id]
    for request in tries:
        verified(request, secret)


def test_a_slow_receiver_holds_up_neither_other_subscriptions_nor_tasks(stack: Stack) -> None:
    """A receiver that never answers holds its subscription's four places: another
    subscription's delivery goes at once, and the worker's tasks run."""
    stack.env.update(OPEN)
    worker = stack.start_worker()
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    with receiving() as receiver:
        slow, _ = subscribe(redis, receiver.plan("/slow", HANG))
        fast, secret = subscribe(redis, receiver.url("/fast"))
        for _ in range(8):
            deliver(redis, slow)
        wait_for(lambda: len(receiver.at("/slow")) == 4, 20, "four attempts held")
        started = time.monotonic()
        key, _ = deliver(redis, fast)
        assert ended(redis, key)["state"] == "delivered"
        assert wait(client, submit(client, "add", {"x": 1, "y": 1}))["result"] == 2
        assert time.monotonic() - started < 5  # long before the held attempts time out (10 s)
        assert len(receiver.at("/slow")) == 4  # no more than its per-subscription limit at once
        # a warm shutdown does not wait for the held attempts (they are sent again after their lease)
        started = time.monotonic()
        stop(worker)
        assert worker.returncode == 0 and time.monotonic() - started < 10
    verified(receiver.at("/fast")[0], secret)
    assert "Traceback" not in (stack.tmp / "worker-0.log").read_text()


def deliverer_of(worker: int) -> int | None:
    """The pid of the webhook deliverer process whose parent is ``worker``, if one runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"taskgate.worker.webhook_process" in cmdline and parent == worker:
            return int(entry.name)
    return None


def a_deliverer(worker: int, besides: int = 0) -> int:
    """The pid of ``worker``'s deliverer (another than ``besides``), once it runs."""
    found = 0

    def running() -> bool:
        nonlocal found
        found = deliverer_of(worker) or 0
        return found not in (0, besides)

    wait_for(running, 20, "the deliverer")
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(120)
def test_the_deliverer_runs_beside_the_worker_goes_on_while_it_is_frozen_and_ends_with_it(stack: Stack) -> None:
    """The deliverer is a process of its own, a child of the worker's main process at a lower
    CPU priority, started again should it die: it delivers while that process is frozen (SIGSTOP), and ends by itself once
    that process is killed (SIGKILL to it alone), sending nothing more."""
    stack.env.update(OPEN)
    worker = start_worker_group(stack, "frozen")
    redis = Redis.from_url(stack.url)
    first = a_deliverer(worker.pid)
    os.kill(first, signal.SIGKILL)  # a deliverer that dies is started again by the keeper
    deliverer = a_deliverer(worker.pid, besides=first)
    wait_for(lambda: os.getpriority(os.PRIO_PROCESS, deliverer) > os.getpriority(os.PRIO_PROCESS, worker.pid),
             10, "the deliverer to lower its priority")
    with receiving() as receiver:
        webhook_id, secret = subscribe(redis, receiver.url("/frozen"))
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            key, _ = deliver(redis, webhook_id)
            assert ended(redis, key)["state"] == "delivered"
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        verified(receiver.at("/frozen")[0], secret)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        wait_for(lambda: not alive(deliverer), 20, "the deliverer to end with its worker")
        key, _ = deliver(redis, webhook_id)
        assert fields(redis, key)["state"] == "pending" and len(receiver.at("/frozen")) == 1
    os.killpg(worker.pid, signal.SIGKILL)  # the pool's processes, should any be left


def test_a_receiver_not_listening_is_an_error_naming_where_it_connected(own_redis_url: str) -> None:
    """The deliverer (run on a loop here) records a refused connection as an error saying which
    host and port it could not reach, and keeps the delivery for its next attempt."""
    redis = Redis.from_url(own_redis_url)
    settings = Settings(redis_url=own_redis_url, webhook_allow_http=True, webhook_allow_private=True)
    port = free_port()  # nothing listens on it
    webhook_id, _ = subscribe(redis, f"http://127.0.0.1:{port}/hook")
    key, _ = deliver(redis, webhook_id)

    async def main() -> None:
        deliverer = Deliverer(settings)
        running = asyncio.create_task(deliverer.main())
        try:
            await asyncio.to_thread(wait_for, lambda: fields(redis, key)["attempts"] == "1", 30, "the attempt")
        finally:
            deliverer.stop()
            await running

    asyncio.run(main())
    delivery = fields(redis, key)
    redis.close()
    assert delivery["state"] == "pending" and "last_status" not in delivery, delivery
    assert delivery["last_error"].startswith(f"could not connect to 127.0.0.1:{port}: "), delivery


def test_an_attempt_is_a_client_span_linked_to_the_run_and_its_traceparent_sent(own_redis_url: str) -> None:
    """Traced (in this process: the deliverer run on its loop here), each attempt is a CLIENT
    span ``POST`` of a trace of its own, linked to the trace the run's record kept; the request
    carries its ``traceparent``; a 500 is an error."""
    redis = Redis.from_url(own_redis_url)
    settings = Settings(redis_url=own_redis_url, webhook_allow_http=True, webhook_allow_private=True)
    run_trace = "0af7651916cd43dd8448eb211c80319c"
    with receiving() as receiver, otel.in_memory() as exporter:
        webhook_id, _ = subscribe(redis, receiver.plan("/hook", 500, 200))
        task_id = "traced-run"
        _, msg_id = deliver(redis, webhook_id, task_id, {**ended_record(task_id), "trace_id": run_trace})

        async def main() -> None:
            deliverer = Deliverer(settings)
            running = asyncio.create_task(deliverer.main())
            try:
                await asyncio.to_thread(wait_for, lambda: receiver.at("/hook"), 30, "the attempt")
            finally:
                deliverer.stop()
                await running

        asyncio.run(main())
        (sent,) = receiver.at("/hook")
        (span,) = exporter.get_finished_spans()
    redis.close()
    assert span.name == "POST" and span.kind is SpanKind.CLIENT and span.parent is None
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == 500 and span.status.status_code is StatusCode.ERROR
    assert attributes["taskgate.webhook.msg_id"] == msg_id and attributes["taskgate.webhook.attempt"] == 1
    assert attributes["url.full"] == f"http://127.0.0.1:{receiver.server.server_address[1]}/"
    (link,) = span.links
    assert f"{link.context.trace_id:032x}" == run_trace
    assert dict(link.attributes or {})["taskgate.task.id"] == task_id
    assert sent.headers["traceparent"].split("-")[1:3] == [
        f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"]


def test_a_workflow_event_s_attempt_links_to_the_workflow_s_submit_span(own_redis_url: str) -> None:
    """A ``workflow.*`` delivery of a workflow submitted traced (its payload has the span
    ``webhooks.lua`` read from the workflow's hash: tests/records/test_webhook_scripts.py): the
    attempt's CLIENT span links to that span; the body sent has the summary, not the span."""
    redis = Redis.from_url(own_redis_url)
    settings = Settings(redis_url=own_redis_url, webhook_allow_http=True, webhook_allow_private=True)
    submitted = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with receiving() as receiver, otel.in_memory() as exporter:
        webhook_id, _ = subscribe(redis, receiver.plan("/flow", 200))
        workflow_id = "traced-flow"
        msg_id = webhooks.workflow_msg_id(workflow_id, "succeeded")
        key = keys.delivery(webhooks.delivery_id(webhook_id, msg_id))
        now = int(time.time() * 1000)
        summary = {"workflow_id": workflow_id, "name": "flow", "state": "succeeded", "owner": "anonymous",
                   "created_at": str(now - 20), "finished_at": str(now), "nodes": "1", "left": "0", "failed": "0"}
        redis.hset(key, mapping={"webhook": webhook_id, "msg_id": msg_id, "type": "workflow.succeeded",
                                 "payload": orjson.dumps({**summary, "traceparent": submitted}), "attempts": 0,
                                 "state": "pending", "next_at": now, "created_at": now})
        redis.zadd(keys.WEBHOOK_DUE, {key: now})

        async def main() -> None:
            deliverer = Deliverer(settings)
            running = asyncio.create_task(deliverer.main())
            try:
                await asyncio.to_thread(wait_for, lambda: receiver.at("/flow"), 30, "the attempt")
            finally:
                deliverer.stop()
                await running

        asyncio.run(main())
        (sent,) = receiver.at("/flow")
        (span,) = exporter.get_finished_spans()
    redis.close()
    assert span.kind is SpanKind.CLIENT and span.parent is None
    (link,) = span.links
    assert (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") == tuple(submitted.split("-")[1:3])
    assert dict(link.attributes or {}) == {"taskgate.workflow.id": workflow_id}
    body = orjson.loads(sent.body)
    assert body["type"] == "workflow.succeeded" and body["data"]["workflow_id"] == workflow_id
    assert "traceparent" not in body["data"], body


def test_the_deliverer_process_exports_its_attempts_with_taskgate_otel_on(own_redis_url: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With TASKGATE_OTEL=on the deliverer's own process sets up the SDK (as the worker's do) and
    exports each attempt's CLIENT span over OTLP/HTTP, the trace its request carried."""
    collector = otel.Receiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    redis = Redis.from_url(own_redis_url)
    settings = Settings(redis_url=own_redis_url, webhook_allow_http=True, webhook_allow_private=True, otel=True)
    deliverer = DelivererProcess(settings)
    try:
        with receiving() as receiver:
            webhook_id, _ = subscribe(redis, receiver.plan("/hook", 200))
            deliver(redis, webhook_id, "exported-run")
            deliverer.start()
            wait_for(lambda: bool(receiver.at("/hook")), 30, "the attempt")
            (sent,) = receiver.at("/hook")
            deliverer.stop()  # its provider exports what it holds as it ends
            span = collector.named("POST")
    finally:
        deliverer.stop()
        collector.close()
        redis.close()
    assert (span.service, span.kind, span.status) == ("taskgate-webhooks", "CLIENT", "UNSET")
    assert span.attributes["http.response.status_code"] == 200
    assert sent.headers["traceparent"].split("-")[1:3] == [span.trace_id, span.span_id]

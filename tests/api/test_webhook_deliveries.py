"""A webhook's deliveries over HTTP: a test event (``POST /webhooks/{id}/test``), the list
(``GET /webhooks/{id}/deliveries``) and a retry (``POST .../deliveries/{delivery_id}/retry``),
sent by a real worker to a local receiver (``tests/worker/receiver.py``) and verified with the
``standardwebhooks`` library; owners kept apart.

This module has its own Valkey and one worker (a worker's deliverer sends whatever is due in its
Redis), the API in process with auth on. Both run with TASKGATE_WEBHOOK_ALLOW_HTTP and
TASKGATE_WEBHOOK_ALLOW_PRIVATE (the receiver is http://127.0.0.1) and the worker with a short
TASKGATE_WEBHOOK_SCHEDULE (two retries 0.3 s apart), so a failing delivery fails within a second.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis
from standardwebhooks.webhooks import Webhook

from taskgate import auth
from taskgate.api import create_app
from taskgate.config import Settings
from taskgate.records import keys

from .. import inprocess
from ..helpers import start_valkey, start_worker, stop, wait_for
from ..worker.receiver import Received, Receiver, receiving

#: Retry delays (s) of the worker: three attempts in all.
SCHEDULE = "0.3,0.3"
ATTEMPTS = 3


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_valkey(tmp_path_factory.mktemp("webhook-deliveries-valkey"))
    yield f"{server.connection_url}/0"
    server.stop()


@pytest.fixture(scope="module")
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """The API in process (auth on) and a worker sending the deliveries."""
    log: Path = tmp_path_factory.mktemp("webhook-deliveries-worker") / "worker.log"
    worker = start_worker(redis_url, log, TASKGATE_WEBHOOK_ALLOW_HTTP="1", TASKGATE_WEBHOOK_ALLOW_PRIVATE="1",
                          TASKGATE_WEBHOOK_SCHEDULE=SCHEDULE)
    settings = Settings(redis_url=redis_url, auth="on", webhook_allow_private=True, webhook_allow_http=True)
    try:
        with inprocess.serve(create_app(settings)) as http:
            yield http
    finally:
        stop(worker)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with receiving() as local:
        yield local


def owner(redis: Redis, name: str, admin: bool = False) -> dict[str, str]:
    """A new owner's API key, as headers."""
    return {"Authorization": f"Bearer {auth.create(redis, f'{name}-{time.monotonic_ns()}', admin)[1]}"}


@pytest.fixture
def alice(redis: Redis) -> dict[str, str]:
    return owner(redis, "alice")


def subscribe(api: httpx.Client, headers: dict[str, str], url: str, events: list[str]) -> tuple[str, str]:
    """A subscription made over HTTP: (its id, its secret)."""
    made = api.post("/webhooks", json={"url": url, "events": events}, headers=headers)
    assert made.status_code == 201, made.text
    return made.json()["id"], made.json()["secret"]


def run_add(api: httpx.Client, headers: dict[str, str], x: int, y: int) -> str:
    """An add task of the owner's, once it has succeeded: its id."""
    response = api.post("/tasks/add", json={"x": x, "y": y}, headers=headers)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    ended = api.get(f"/tasks/{task_id}", params={"wait": 20}, headers=headers, timeout=30)
    assert ended.json()["state"] == "succeeded", ended.text
    return task_id


def verified(request: Received, secret: str) -> dict[str, Any]:
    """The request's body, once ``standardwebhooks`` accepts its signature with ``secret``."""
    body: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return body


def deliveries(api: httpx.Client, headers: dict[str, str], webhook_id: str, **params: Any) -> list[dict[str, Any]]:
    response = api.get(f"/webhooks/{webhook_id}/deliveries", params=params, headers=headers)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()["deliveries"]
    return listed


def settled(api: httpx.Client, headers: dict[str, str], webhook_id: str, count: int) -> list[dict[str, Any]]:
    """The subscription's ``count`` deliveries, once none is pending."""
    def done() -> bool:
        listed = deliveries(api, headers, webhook_id)
        return len(listed) == count and all(item["state"] != "pending" for item in listed)

    wait_for(done, 30, f"{count} deliveries of {webhook_id} to end")
    return deliveries(api, headers, webhook_id)


def test_a_test_event_arrives_signed_whatever_the_subscription_takes(
        api: httpx.Client, receiver: Receiver, alice: dict[str, str]) -> None:
    webhook_id, secret = subscribe(api, alice, receiver.url("/tested"), ["workflow.failed"])
    response = api.post(f"/webhooks/{webhook_id}/test", headers=alice)
    assert response.status_code == 202, response.text
    sent = response.json()
    assert sent["type"] == "webhook.test" and sent["state"] == "pending" and sent["attempts"] == 0
    assert sent["id"] == f"{webhook_id}:{sent['msg_id']}" and sent["msg_id"].startswith("msg_test_")
    wait_for(lambda: len(receiver.at("/tested")) == 1, 20, "the test event")
    (request,) = receiver.at("/tested")
    body = verified(request, secret)
    assert request.headers["webhook-id"] == sent["msg_id"]
    assert body["type"] == "webhook.test" and body["data"]["webhook_id"] == webhook_id
    (listed,) = settled(api, alice, webhook_id, 1)
    assert (listed["id"], listed["state"], listed["attempts"], listed["last_status"], listed["last_error"],
            listed["next_attempt_at"]) == (sent["id"], "delivered", 1, 200, None, None)
    assert listed["created_at"] <= listed["last_attempt_at"]


def test_the_list_shows_attempts_answers_and_states_of_real_runs_ends(
        api: httpx.Client, receiver: Receiver, alice: dict[str, str]) -> None:
    """A run's end to a receiver answering 500 then 200 (delivered on the second attempt), and
    to one answering 503 always (failed once the schedule is spent)."""
    flaky, _ = subscribe(api, alice, receiver.plan("/flaky", 500, 200), ["task.succeeded"])
    broken, _ = subscribe(api, alice, receiver.plan("/broken", 503), ["task.*"])
    task_id = run_add(api, alice, 1, 2)
    (delivered,) = settled(api, alice, flaky, 1)
    (failed,) = settled(api, alice, broken, 1)
    msg_id = f"msg_{task_id}_succeeded"
    assert (delivered["id"], delivered["msg_id"], delivered["type"], delivered["state"], delivered["attempts"],
            delivered["last_status"], delivered["last_error"]) == (
        f"{flaky}:{msg_id}", msg_id, "task.succeeded", "delivered", 2, 200, None)
    assert (failed["msg_id"], failed["state"], failed["attempts"], failed["last_status"],
            failed["next_attempt_at"]) == (msg_id, "failed", ATTEMPTS, 503, None)
    assert failed["last_error"] == "HTTP 503: ok"  # the answer's body, as far as it is kept
    assert [request.headers["webhook-id"] for request in receiver.at("/flaky")] == [msg_id] * 2


def paged(api: httpx.Client, headers: dict[str, str], webhook_id: str, limit: int) -> list[str]:
    """The ids of every delivery listed, page after page."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}
        page = api.get(f"/webhooks/{webhook_id}/deliveries", params=params, headers=headers).json()
        seen += [item["id"] for item in page["deliveries"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def test_pages_run_newest_first_without_repeats(api: httpx.Client, redis: Redis, receiver: Receiver,
                                                alice: dict[str, str]) -> None:
    webhook_id, _ = subscribe(api, alice, receiver.url("/paged"), ["task.failed"])
    sent = [api.post(f"/webhooks/{webhook_id}/test", headers=alice).json()["id"] for _ in range(5)]
    listed = deliveries(api, alice, webhook_id)
    assert sorted(item["id"] for item in listed) == sorted(sent)
    created = [item["created_at"] for item in listed]
    assert created == sorted(created, reverse=True)
    assert paged(api, alice, webhook_id, 2) == [item["id"] for item in listed]
    # events of one millisecond (a run's end and its workflow's, say) are neither lost nor repeated
    redis.zadd(keys.deliveries_of(webhook_id), {keys.delivery(delivery_id): 1 for delivery_id in sent}, xx=True)
    assert sorted(paged(api, alice, webhook_id, 2)) == sorted(sent)


def test_a_failed_delivery_retried_is_delivered_with_the_same_webhook_id(
        api: httpx.Client, receiver: Receiver, alice: dict[str, str]) -> None:
    webhook_id, secret = subscribe(api, alice, receiver.plan("/mended", 502), ["task.succeeded"])
    task_id = run_add(api, alice, 2, 2)
    (failed,) = settled(api, alice, webhook_id, 1)
    assert failed["state"] == "failed" and failed["attempts"] == ATTEMPTS
    receiver.plan("/mended", 200)  # the receiver is fixed
    path = f"/webhooks/{webhook_id}/deliveries/{failed['id']}/retry"
    response = api.post(path, headers=alice)
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "pending" and response.json()["attempts"] == ATTEMPTS
    (delivered,) = settled(api, alice, webhook_id, 1)
    assert delivered["state"] == "delivered" and delivered["attempts"] == ATTEMPTS + 1
    assert delivered["last_status"] == 200 and delivered["last_error"] is None
    tries = receiver.at("/mended")
    assert [request.headers["webhook-id"] for request in tries] == [f"msg_{task_id}_succeeded"] * (ATTEMPTS + 1)
    bodies = [verified(request, secret) for request in tries]
    assert all(body == bodies[0] for body in bodies)  # the same event each time
    again = api.post(path, headers=alice)
    assert again.status_code == 409 and "was delivered" in again.json()["error"]["message"]


def test_a_disabled_subscription_takes_no_test_or_retry(api: httpx.Client, receiver: Receiver,
                                                        alice: dict[str, str]) -> None:
    webhook_id, _ = subscribe(api, alice, receiver.plan("/off", 503), ["task.succeeded"])
    run_add(api, alice, 3, 3)
    (failed,) = settled(api, alice, webhook_id, 1)
    assert api.patch(f"/webhooks/{webhook_id}", json={"enabled": False}, headers=alice).status_code == 200
    tested = api.post(f"/webhooks/{webhook_id}/test", headers=alice)
    assert tested.status_code == 409 and "is disabled" in tested.json()["error"]["message"]
    retried = api.post(f"/webhooks/{webhook_id}/deliveries/{failed['id']}/retry", headers=alice)
    assert retried.status_code == 409 and "is disabled" in retried.json()["error"]["message"]
    assert len(deliveries(api, alice, webhook_id)) == 1


def test_another_owners_deliveries_are_not_found(api: httpx.Client, redis: Redis, receiver: Receiver,
                                                 alice: dict[str, str]) -> None:
    bob, admin = owner(redis, "bob"), owner(redis, "root", admin=True)
    webhook_id, _ = subscribe(api, alice, receiver.url("/alice"), ["task.*"])
    sent = api.post(f"/webhooks/{webhook_id}/test", headers=alice).json()
    settled(api, alice, webhook_id, 1)
    bobs, _ = subscribe(api, bob, receiver.url("/bob"), ["task.*"])
    for method, path in (("GET", f"/webhooks/{webhook_id}/deliveries"), ("POST", f"/webhooks/{webhook_id}/test"),
                         ("POST", f"/webhooks/{webhook_id}/deliveries/{sent['id']}/retry"),
                         # alice's delivery under bob's own subscription
                         ("POST", f"/webhooks/{bobs}/deliveries/{sent['id']}/retry")):
        response = api.request(method, path, headers=bob)
        assert response.status_code == 404, (path, response.text)
    assert deliveries(api, bob, bobs) == []
    assert receiver.at("/bob") == [] and len(receiver.at("/alice")) == 1
    assert [item["id"] for item in deliveries(api, admin, webhook_id)] == [sent["id"]]  # an admin sees all
    assert redis.zscore(keys.WEBHOOK_DUE, keys.delivery(sent["id"])) is None

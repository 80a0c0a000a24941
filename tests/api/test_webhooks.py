"""Webhook subscriptions over HTTP: create (the secret shown once), list, read, change, rotate the
secret, delete; owners kept apart; every 422.

The API runs in this process on a Valkey of this module's own (a subscription there hears no
other test's runs, and no session worker sends its deliveries). Most tests run it with
TASKGATE_WEBHOOK_ALLOW_PRIVATE and TASKGATE_WEBHOOK_ALLOW_HTTP on, so their URLs need no DNS;
the SSRF tests run it with the address guard on (TASKGATE_WEBHOOK_ALLOW_PRIVATE off; http allowed,
so the address is what is refused)."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any, get_args

import httpx
import pytest
from redis import Redis

from taskgate import auth
from taskgate.api import create_app
from taskgate.api.routes.webhooks import EventName
from taskgate.config import Settings
from taskgate.records import keys, webhooks
from taskgate.records.scripts import Scripts

from .. import inprocess
from ..helpers import start_valkey
from ..records.test_webhook_scripts import end_run

URL = "http://receiver.test/hooks"


@pytest.fixture(scope="module")
def private_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_valkey(tmp_path_factory.mktemp("webhook-api-valkey"))
    yield f"{server.connection_url}/0"
    server.stop()


@pytest.fixture(scope="module")
def redis(private_url: str) -> Iterator[Redis]:
    client = Redis.from_url(private_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def api(private_url: str) -> Iterator[httpx.Client]:
    """Auth on; private addresses and http allowed."""
    settings = Settings(redis_url=private_url, auth="on", webhook_allow_private=True, webhook_allow_http=True)
    with inprocess.serve(create_app(settings)) as http:
        yield http


@pytest.fixture(scope="module")
def guarded(private_url: str) -> Iterator[httpx.Client]:
    """Auth off (the anonymous admin); the address guard on, http allowed."""
    settings = Settings(redis_url=private_url, auth="off", webhook_allow_private=False, webhook_allow_http=True)
    with inprocess.serve(create_app(settings)) as http:
        yield http


def bearer(redis: Redis, owner: str, admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {auth.create(redis, owner, admin)[1]}"}


@pytest.fixture
def alice(redis: Redis) -> dict[str, str]:
    return bearer(redis, f"alice-{time.monotonic_ns()}")


def create(api: httpx.Client, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    response = api.post("/webhooks", json={"url": URL, "events": ["task.*"], **body}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def refused(api: httpx.Client, headers: dict[str, str], body: dict[str, Any], status: int = 422) -> str:
    response = api.post("/webhooks", json=body, headers=headers)
    assert response.status_code == status, response.text
    message: str = response.json()["error"]["message"]
    return message


def test_the_schema_names_the_events_records_know() -> None:
    assert get_args(EventName) == webhooks.EVENTS


def test_create_shows_the_secret_once_and_never_logs_it(api: httpx.Client, redis: Redis, alice: dict[str, str],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = api.post("/webhooks", json={"url": URL, "events": ["task.failed", "workflow.*"],
                                           "tasks": ["add"], "description": "pager"}, headers=alice)
    assert response.status_code == 201, response.text
    made = response.json()
    assert response.headers["location"].endswith(f"/webhooks/{made['id']}") and made["id"].startswith("wh_")
    assert (made["url"], made["events"], made["tasks"], made["description"], made["enabled"], made["all"]) == (
        URL, ["task.failed", "workflow.*"], ["add"], "pager", True, False)
    assert made["created_at"] and made["owner"].startswith("alice-")
    secret = made["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert redis.hget(keys.webhook(made["id"]), "secret") == secret.encode()
    read = api.get(f"/webhooks/{made['id']}", headers=alice).json()
    assert "secret" not in read and {k: v for k, v in made.items() if k not in (
        "secret", "previous_secret_valid_until")} == read
    listed = api.get("/webhooks", headers=alice).json()["webhooks"]
    assert [item["id"] for item in listed] == [made["id"]] and "secret" not in listed[0]
    assert secret not in caplog.text and secret.removeprefix("whsec_") not in caplog.text


def test_patch_changes_what_is_given_and_enabling_clears_why_it_was_disabled(
        api: httpx.Client, redis: Redis, alice: dict[str, str]) -> None:
    made = create(api, alice, tasks=["add"], description="d")
    path = f"/webhooks/{made['id']}"
    changed = api.patch(path, json={"events": ["task.succeeded"]}, headers=alice).json()
    assert (changed["events"], changed["tasks"], changed["description"]) == (["task.succeeded"], ["add"], "d")
    changed = api.patch(path, json={"tasks": None, "url": "http://other.test/x"}, headers=alice).json()
    assert (changed["tasks"], changed["url"], changed["events"]) == (None, "http://other.test/x", ["task.succeeded"])
    # as the sender disables one (a 410, or failing for days)
    redis.hset(keys.webhook(made["id"]), mapping={"enabled": "0", "disabled_reason": "the receiver answered 410",
                                                  "failing_since": int(time.time() * 1000)})
    disabled = api.get(path, headers=alice).json()
    assert (disabled["enabled"], disabled["disabled_reason"]) == (False, "the receiver answered 410")
    assert isinstance(datetime.fromisoformat(disabled["failing_since"]), datetime)
    enabled = api.patch(path, json={"enabled": True}, headers=alice).json()
    assert (enabled["enabled"], enabled["disabled_reason"], enabled["failing_since"]) == (True, None, None)
    paused = api.patch(path, json={"enabled": False, "description": "off"}, headers=alice).json()
    assert (paused["enabled"], paused["description"], paused["disabled_reason"]) == (False, "off", None)
    assert api.patch(path, json={"events": ["task.started"]}, headers=alice).status_code == 422
    assert api.patch(path, json={"secret": "mine"}, headers=alice).status_code == 422
    assert api.patch("/webhooks/wh_nope", json={"enabled": True}, headers=alice).status_code == 404


def test_rotating_keeps_the_previous_secret_valid_for_a_day(api: httpx.Client, redis: Redis,
                                                             alice: dict[str, str]) -> None:
    made = create(api, alice)
    rotated = api.post(f"/webhooks/{made['id']}/rotate-secret", headers=alice)
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["secret"].startswith("whsec_") and body["secret"] != made["secret"]
    until = datetime.fromisoformat(body["previous_secret_valid_until"]).timestamp()
    assert abs(until - (time.time() + webhooks.PREVIOUS_SECRET_VALID)) < 60
    stored = webhooks.decode(made["id"], redis.hgetall(keys.webhook(made["id"])))
    assert stored is not None and (stored.secret, stored.previous_secret) == (body["secret"], made["secret"])
    assert stored.signing_secrets(time.time()) == [body["secret"], made["secret"]]
    assert stored.signing_secrets(until + 1) == [body["secret"]]
    assert "secret" not in api.get(f"/webhooks/{made['id']}", headers=alice).json()


def test_delete_drops_its_pending_deliveries(api: httpx.Client, redis: Redis, alice: dict[str, str]) -> None:
    made = create(api, alice)
    owner = made["owner"]
    end_run(Scripts(redis), owner=owner)  # a run of alice's ends: one delivery, due
    [listed] = redis.zrange(keys.deliveries_of(made["id"]), 0, -1)
    assert redis.zscore(keys.WEBHOOK_DUE, listed) is not None
    assert api.delete(f"/webhooks/{made['id']}", headers=alice).status_code == 204
    assert redis.zscore(keys.WEBHOOK_DUE, listed) is None and not redis.exists(listed)
    assert api.get(f"/webhooks/{made['id']}", headers=alice).status_code == 404
    assert api.delete(f"/webhooks/{made['id']}", headers=alice).status_code == 404
    end_run(Scripts(redis), owner=owner)
    assert not redis.exists(keys.deliveries_of(made["id"])), "a deleted subscription hears nothing"


def test_owners_see_their_own_and_admins_every_one(api: httpx.Client, redis: Redis) -> None:
    tag = time.monotonic_ns()
    alice, bob, admin = (bearer(redis, f"alice-{tag}"), bearer(redis, f"bob-{tag}"),
                         bearer(redis, f"ops-{tag}", admin=True))
    mine = create(api, alice)["id"]
    theirs = create(api, bob)["id"]
    assert [w["id"] for w in api.get("/webhooks", headers=alice).json()["webhooks"]] == [mine]
    for method in ("GET", "PATCH", "DELETE"):
        response = api.request(method, f"/webhooks/{mine}", headers=bob,
                               json={"enabled": False} if method == "PATCH" else None)
        assert response.status_code == 404, (method, response.text)
    assert api.post(f"/webhooks/{mine}/rotate-secret", headers=bob).status_code == 404
    assert api.get(f"/webhooks/{mine}", headers=alice).json()["enabled"] is True, "bob changed nothing"
    message = refused(api, bob, {"url": URL, "events": ["task.*"], "all": True}, status=403)
    assert "admin" in message
    everyone = create(api, admin, all=True)
    assert everyone["all"] is True and everyone["owner"] == f"ops-{tag}"
    seen = {w["id"]: w for w in api.get("/webhooks", headers=admin, params={"limit": 500}).json()["webhooks"]}
    assert {mine, theirs, everyone["id"]} <= set(seen) and seen[mine]["owner"] == f"alice-{tag}"
    assert api.get(f"/webhooks/{mine}", headers=admin).status_code == 200
    assert redis.sismember(keys.WEBHOOKS_ALL, everyone["id"])
    assert api.delete(f"/webhooks/{everyone['id']}", headers=admin).status_code == 204  # hears no one else's
    assert api.get("/webhooks").status_code == 401


def test_pages_follow_the_cursor(api: httpx.Client, alice: dict[str, str]) -> None:
    ids = [create(api, alice)["id"] for _ in range(5)]
    first = api.get("/webhooks", headers=alice, params={"limit": 3}).json()
    second = api.get("/webhooks", headers=alice, params={"limit": 3, "cursor": first["next_cursor"]}).json()
    paged = [w["id"] for w in first["webhooks"] + second["webhooks"]]
    assert sorted(paged) == sorted(ids) and second["next_cursor"] is None  # (one ms may hold several)
    stamps = [w["created_at"] for w in first["webhooks"] + second["webhooks"]]
    assert stamps == sorted(stamps), "oldest first"


@pytest.mark.parametrize(("body", "says"), [
    ({"url": URL, "events": ["task.started"]}, "events"),
    ({"url": URL, "events": []}, "events"),
    ({"url": URL}, "events"),
    ({"url": "ftp://receiver.test/", "events": ["task.*"]}, "https://"),
    ({"url": "receiver.test/hooks", "events": ["task.*"]}, "https://"),
    ({"url": "https://user:pw@receiver.test/", "events": ["task.*"]}, "credentials"),
    ({"url": "https://receiver.test/" + "x" * 2100, "events": ["task.*"]}, "url"),
    ({"url": URL, "events": ["task.*"], "tasks": []}, "tasks"),
    ({"url": URL, "events": ["task.*"], "tasks": [""]}, "tasks"),
    ({"url": URL, "events": ["task.*"], "description": "x" * 501}, "description"),
    ({"url": URL, "events": ["task.*"], "secret": "whsec_mine"}, "secret"),
])
def test_what_is_wrong_is_a_422_naming_it(api: httpx.Client, alice: dict[str, str], body: dict[str, Any],
                                         says: str) -> None:
    assert says in refused(api, alice, body)


def test_an_owner_has_at_most_the_limit(api: httpx.Client, redis: Redis) -> None:
    headers = bearer(redis, f"many-{time.monotonic_ns()}")
    for _ in range(webhooks.MAX_PER_OWNER):
        create(api, headers)
    assert "delete one first" in refused(api, headers, {"url": URL, "events": ["task.*"]})


# --- SSRF, with the guard on ---------------------------------------------------------------------

@pytest.mark.parametrize(("url", "says"), [
    ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
    ("http://10.0.0.1/", "10.0.0.1 is a private address"),
    ("http://169.254.169.254/latest/meta-data/", "the cloud metadata address"),
    ("http://localhost:8080/hooks", "localhost (resolving to 127.0.0.1) is a loopback address"),
    ("https://[::ffff:127.0.0.1]/", "loopback"),
    ("https://[fd00:ec2::254]/", "the cloud metadata address"),
    ("https://0.0.0.0/", "0.0.0.0"),
    ("https://224.0.0.1/", "multicast"),
])
def test_the_guard_refuses_hosts_that_are_or_resolve_to_inner_addresses(guarded: httpx.Client, url: str,
                                                                        says: str) -> None:
    response = guarded.post("/webhooks", json={"url": url, "events": ["task.*"]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert says in error["message"] and "TASKGATE_WEBHOOK_ALLOW_PRIVATE" in error["message"]
    assert error["errors"][0]["loc"] == ["body", "url"]


def test_the_guard_lets_public_addresses_through_and_checks_a_changed_url(guarded: httpx.Client) -> None:
    made = guarded.post("/webhooks", json={"url": "https://8.8.8.8/hooks", "events": ["task.*"]})
    assert made.status_code == 201, made.text
    path = f"/webhooks/{made.json()['id']}"
    changed = guarded.patch(path, json={"url": "http://10.1.2.3/"})
    assert changed.status_code == 422 and "private" in changed.json()["error"]["message"]
    assert guarded.get(path).json()["url"] == "https://8.8.8.8/hooks"
    assert guarded.delete(path).status_code == 204

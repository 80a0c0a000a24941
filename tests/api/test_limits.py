"""GET/PUT/DELETE /limits and `waiting_for`, through the in-process API with the session's worker
and Valkey: a runtime override makes a run wait for a slot, visible on the task and the limits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from redis import Redis

from taskgate.records import keys

from ..helpers import submit, wait
from .test_auth import bearer, new_key


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


def task_view(client: httpx.Client, task_id: str) -> dict[str, object]:
    response = client.get(f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    view: dict[str, object] = response.json()
    return view


def limits_of(client: httpx.Client, task: str) -> dict[str, object] | None:
    response = client.get("/limits")
    assert response.status_code == 200, response.text
    return next((one for one in response.json() if one["task"] == task), None)


def test_a_run_waits_for_a_slot_and_says_so(client: httpx.Client, redis: Redis) -> None:
    response = client.put("/limits/sleepy", json={"concurrency": 1})
    assert response.status_code == 200, response.text
    ids: list[str] = []
    try:
        assert response.json()["effective"] == {"rate_limit": None, "burst": None, "concurrency": 1,
                                                "weights": None}
        assert response.json()["override"] == {"concurrency": 1}, "only the parts set are shown"
        assert orjson.loads(redis.hget(keys.LIMITS_OVERRIDE, "sleepy") or b"") == {"concurrency": 1}
        ids.append(submit(client, "sleepy", {"seconds": 60}))
        ids.append(submit(client, "sleepy", {"seconds": 0}))
        first, second = task_view(client, ids[0]), task_view(client, ids[1])
        assert first["waiting_for"] is None, "the first run took the slot"
        assert second["state"] == "queued" and second["waiting_for"] == "slot", second
        listed = {task["task_id"]: task for task in client.get("/tasks", params={"name": "sleepy"}).json()["tasks"]}
        assert listed[ids[1]]["waiting_for"] == "slot"

        shown = limits_of(client, "sleepy")
        assert shown is not None
        assert shown["source"] == "override"
        assert shown["declared"] == {"rate_limit": None, "burst": None, "concurrency": None, "weights": None}
        assert shown["keys"] == [{"rate_key": "", "concurrency_key": "", "running": 1, "waiting": 1,
                                  "next_admission_at": None}]
        assert shown["more_keys"] == 0
        # A PUT marks the task's lanes due at once; with no rate that is no admission time
        again = client.put("/limits/sleepy", json={"concurrency": 1}).json()
        assert [key["next_admission_at"] for key in again["keys"]] == [None], again

        # cancelling the running one frees its slot: the waiting one goes and runs
        assert client.post(f"/tasks/{ids[0]}/cancel").status_code in (200, 202)
        done = wait(client, ids[1])
        assert done["state"] == "succeeded" and done["waiting_for"] is None, done
    finally:
        for task_id in ids:
            client.post(f"/tasks/{task_id}/cancel")
        client.delete("/limits/sleepy")
    assert redis.hget(keys.LIMITS_OVERRIDE, "sleepy") is None
    assert limits_of(client, "sleepy") is None, "with no override and no declared limit it is not listed"
    missing = client.delete("/limits/sleepy")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "no_override"
    assert "has no limits override" in missing.json()["error"]["message"]


def test_an_override_of_the_rate_is_stored_as_the_scripts_read_it(client: httpx.Client, redis: Redis) -> None:
    try:
        response = client.put("/limits/power", json={"rate_limit": "10/s", "burst": 3})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["override"] == {"rate_limit": "10/s", "burst": 3}
        assert body["effective"] == {"rate_limit": "10/s", "burst": 3, "concurrency": None, "weights": None}
        assert orjson.loads(redis.hget(keys.LIMITS_OVERRIDE, "power") or b"") == {"rate": [10, 1000, 3]}
        # a PUT replaces the override as a whole; null: no such limit
        body = client.put("/limits/power", json={"rate_limit": "2/m", "concurrency": None}).json()
        assert body["override"] == {"rate_limit": "2/m", "burst": 1, "concurrency": None}
        assert orjson.loads(redis.hget(keys.LIMITS_OVERRIDE, "power") or b"") == {
            "rate": [2, 60000, 1], "concurrency": False}
        body = client.put("/limits/power", json={"rate_limit": None}).json()
        assert body["override"] == {"rate_limit": None, "burst": None}
        assert orjson.loads(redis.hget(keys.LIMITS_OVERRIDE, "power") or b"") == {"rate": False}
    finally:
        assert client.delete("/limits/power").status_code == 204


def test_declared_limits_published_by_workers_are_listed(client: httpx.Client, redis: Redis) -> None:
    name = f"declared{uuid.uuid4().hex[:8]}"
    redis.hset(keys.LIMITS_DECLARED, name, '{"rate":[100,60000,5],"concurrency":2}')
    try:
        shown = limits_of(client, name)
        assert shown == {"task": name, "source": "declared", "override": None, "keys": [], "more_keys": 0,
                         "declared": {"rate_limit": "100/m", "burst": 5, "concurrency": 2, "weights": None},
                         "effective": {"rate_limit": "100/m", "burst": 5, "concurrency": 2, "weights": None}}
        assert client.put(f"/limits/{name}", json={"concurrency": 3}).status_code == 404, \
            "an override is only for a task of this API's catalogue"
    finally:
        redis.hdel(keys.LIMITS_DECLARED, name)


def test_weights_are_shown_and_overridden_as_the_scripts_read_them(client: httpx.Client, redis: Redis) -> None:
    """per_owner declares Concurrency(limit=2, key="owner"): weights set at runtime are stored in
    its override as admission.lua reads them, and shown; null drops declared ones."""
    name = f"weighted{uuid.uuid4().hex[:8]}"
    redis.hset(keys.LIMITS_DECLARED, name, '{"concurrency":2,"weights":{"acme":3}}')
    owner = f"w-{uuid.uuid4().hex[:8]}"  # an owner of this test's own: other runs of per_owner keep weight 1
    try:
        shown = limits_of(client, name)
        assert shown is not None
        assert shown["declared"] == shown["effective"] == {"rate_limit": None, "burst": None, "concurrency": 2,
                                                           "weights": {"acme": 3}}
        body = client.put("/limits/per_owner", json={"weights": {owner: 3, "42": 2}}).json()
        assert body["override"] == {"weights": {owner: 3, "42": 2}}
        assert body["effective"]["weights"] == {owner: 3, "42": 2} and body["effective"]["concurrency"] == 2
        assert orjson.loads(redis.hget(keys.LIMITS_OVERRIDE, "per_owner") or b"") == {"weights": {owner: 3, "42": 2}}
        body = client.put("/limits/per_owner", json={"weights": None, "concurrency": 4}).json()
        assert body["override"] == {"weights": None, "concurrency": 4}
        assert body["effective"] == {"rate_limit": None, "burst": None, "concurrency": 4, "weights": None}
        assert orjson.loads(redis.hget(keys.LIMITS_OVERRIDE, "per_owner") or b"") == {
            "weights": False, "concurrency": 4}
    finally:
        redis.hdel(keys.LIMITS_DECLARED, name)
        client.delete("/limits/per_owner")


@pytest.mark.parametrize(("task", "body", "says"), [
    ("per_owner", {"weights": {"acme": 0}}, "weight 0 of 'acme' must be a whole number from 1 to 1,000"),
    ("per_owner", {"weights": {"acme": 1001}}, "weight 1001 of 'acme'"),
    ("per_owner", {"weights": {"acme": 2.5}}, "valid integer"),
    ("per_owner", {"weights": {"acme": True}}, "valid integer"),
    ("per_owner", {"weights": ["acme", 3]}, "valid dictionary"),
    ("per_owner", {"weights": {"o" * 201: 2}}, "is over 200 characters"),
    ("per_owner", {"weights": {f"o{i}": 2 for i in range(1001)}}, "at most 1,000 may be weighted"),
    ("paired", {"weights": {"acme": 2}}, "weights need a concurrency key: task 'paired' declares "
     "Concurrency(key=\"task\")"),
    ("power", {"weights": {"acme": 2}}, "task 'power' declares no concurrency limit"),
])
def test_bad_weights_are_refused_naming_the_field(client: httpx.Client, redis: Redis, task: str,
                                                  body: dict[str, object], says: str) -> None:
    response = client.put(f"/limits/{task}", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert [problem["loc"][:2] for problem in error["errors"]] == [["body", "weights"]]
    assert says in error["message"] and "weights" in error["message"], error["message"]
    assert redis.hget(keys.LIMITS_OVERRIDE, task) is None, "nothing was stored"


@pytest.mark.parametrize(("body", "field", "says"), [
    ({"rate_limit": "fast"}, "rate_limit", "'fast'"),
    ({"rate_limit": "0/s"}, "rate_limit", "count must be from 1"),
    ({"rate_limit": "5/d"}, "rate_limit", "not one of s, m, h"),
    ({"rate_limit": 5}, "rate_limit", "string"),
    ({"rate_limit": "5/s", "burst": 0}, "burst", "greater than or equal to 1"),
    ({"concurrency": 0}, "concurrency", "greater than or equal to 1"),
    ({"concurrency": 1_000_001}, "concurrency", "less than or equal to 1000000"),
    ({"concurrency": True}, "concurrency", "integer"),
    ({"burst": 4}, "burst", "declares none, so give rate_limit"),
    ({"rate_limit": None, "burst": 4}, "burst", "needs a rate limit"),
    ({"limit": 4}, "limit", "Extra inputs"),
])
def test_a_bad_override_is_refused_naming_the_field(client: httpx.Client, redis: Redis, body: dict[str, object],
                                                    field: str, says: str) -> None:
    response = client.put("/limits/power", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert [problem["loc"] for problem in error["errors"]] == [["body", field]]
    assert says in error["message"] and field in error["message"], error["message"]
    assert redis.hget(keys.LIMITS_OVERRIDE, "power") is None, "nothing was stored"


def test_an_empty_override_or_an_unknown_task_is_refused(client: httpx.Client) -> None:
    empty = client.put("/limits/power", json={})
    assert empty.status_code == 422 and "DELETE /limits" in empty.json()["error"]["message"]
    unknown = client.put("/limits/no_such_task", json={"concurrency": 1})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "unknown_task"
    unknown = client.delete("/limits/no_such_task")
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "unknown_task"


def test_limits_need_an_admin_key(secured: str, redis_url: str) -> None:
    alice, admin = new_key(redis_url, "alice"), new_key(redis_url, "ops", admin=True)
    with httpx.Client(base_url=secured, timeout=10) as http:
        for method, path, body in [("GET", "/limits", None), ("PUT", "/limits/power", {"concurrency": 1}),
                                   ("DELETE", "/limits/power", None)]:
            response = http.request(method, path, json=body, headers=bearer(alice))
            assert response.status_code == 403, (method, response.text)
            assert "admin" in response.json()["error"]["message"]
        assert http.get("/limits", headers=bearer(admin)).status_code == 200

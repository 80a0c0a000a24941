"""Secure by default: API keys, per-owner visibility, the auth switch, quotas, Flower, JSON only."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import redis

from ..helpers import OUTSIDE, env_for, free_port, start_api, stop, wait, wait_for


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskgate", *args], env=env_for(redis_url),
                          capture_output=True, text=True, timeout=60, cwd=OUTSIDE)


def new_key(redis_url: str, owner: str, admin: bool = False) -> str:
    result = cli(redis_url, "keys", "create", f"--owner={owner}", *(["--admin"] if admin else []))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_auth_matrix(secured: str, redis_url: str, worker: subprocess.Popen[bytes]) -> None:
    alice, bob = new_key(redis_url, f"alice-{uuid.uuid4().hex[:6]}"), new_key(redis_url, "bob")
    admin = new_key(redis_url, "ops", admin=True)
    with httpx.Client(base_url=secured, timeout=10) as http:
        assert http.get("/healthz").status_code == 200  # liveness needs no key
        for headers in ({}, bearer("nonsense"), bearer("tg_000000000000_" + "x" * 43), {"Authorization": alice}):
            response = http.post("/tasks/add", json={"x": 1, "y": 2}, headers=headers)
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "unauthorized"

        task_id = http.post("/tasks/add", json={"x": 1, "y": 2}, headers=bearer(alice)).json()["task_id"]
        http.headers.update(bearer(alice))
        assert wait(http, task_id)["owner"].startswith("alice-")
        # Another owner gets 404 everywhere, as if the id did not exist.
        for method, path in [("GET", f"/tasks/{task_id}"), ("POST", f"/tasks/{task_id}/cancel"),
                             ("GET", f"/tasks/{task_id}/events"), ("DELETE", f"/tasks/{task_id}"),
                             ("GET", f"/result/{task_id}"), ("POST", f"/dead-letters/{task_id}/requeue")]:
            response = http.request(method, path, headers=bearer(bob))
            assert response.status_code == 404, (method, path, response.text)
        assert task_id not in [t["task_id"] for t in http.get("/tasks", headers=bearer(bob)).json()["tasks"]]
        assert task_id in [t["task_id"] for t in http.get("/tasks", headers=bearer(alice)).json()["tasks"]]
        # The admin sees everyone's.
        assert http.get(f"/tasks/{task_id}", headers=bearer(admin)).json()["result"] == 3
        assert task_id in [t["task_id"] for t in
                           http.get("/tasks", headers=bearer(admin), params={"limit": 100}).json()["tasks"]]

        # The owner filter: an admin's choice; anyone may name themselves.
        owner = wait(http, task_id)["owner"]
        by_owner = http.get("/tasks", headers=bearer(admin), params={"owner": owner, "limit": 100}).json()
        assert [t["task_id"] for t in by_owner["tasks"]] == [task_id]
        assert http.get("/tasks", headers=bearer(alice), params={"owner": owner}).status_code == 200
        refused = http.get("/tasks", headers=bearer(bob), params={"owner": owner})
        assert refused.status_code == 403 and "admin" in refused.json()["error"]["message"]
        # Metrics, workers and the summary are for admins.
        for path in ("/metrics", "/workers", "/summary"):
            assert http.get(path, headers=bearer(bob)).status_code == 403, path
        assert http.get("/metrics", headers=bearer(admin)).status_code == 200
        assert httpx.get(f"{secured}/metrics").status_code == 401
        # The catalogue needs a key (any owner's); only health and the docs are open.
        assert httpx.get(f"{secured}/tasks/catalogue").status_code == 401
        assert "add" in [entry["name"] for entry in http.get("/tasks/catalogue", headers=bearer(bob)).json()]
        assert httpx.get(f"{secured}/docs").status_code == 200

        # Dead letters are scoped the same way.
        dead = http.post("/tasks/flaky", json={"counter": f"/tmp/{uuid.uuid4().hex}", "failures": 99},
                         headers=bearer(alice)).json()["task_id"]
        assert wait(http, dead, 30)["state"] == "failed"
        assert dead in [d["task_id"] for d in http.get("/dead-letters", headers=bearer(alice)).json()["dead_letters"]]
        assert dead not in [d["task_id"] for d in http.get("/dead-letters", headers=bearer(bob)).json()["dead_letters"]]
        assert http.post(f"/dead-letters/{dead}/requeue", headers=bearer(bob)).status_code == 404
        assert http.delete(f"/dead-letters/{dead}", headers=bearer(bob)).status_code == 404
        assert http.delete(f"/dead-letters/{dead}", headers=bearer(alice)).status_code == 204

        # Revocation holds as soon as the API gets its notice (tests/api/test_keycache.py).
        key_id = alice.split("_")[1]
        assert cli(redis_url, "keys", "revoke", key_id).returncode == 0
        wait_for(lambda: http.get(f"/tasks/{task_id}").status_code == 401, 10, "the revoked key to be refused")
        listed = cli(redis_url, "keys", "list").stdout
        assert key_id not in listed and "ops  admin" in listed
        assert "secret" not in listed


def test_keys_are_stored_hashed(redis_url: str) -> None:
    key = new_key(redis_url, "carol")
    conn = redis.Redis.from_url(redis_url)
    stored = conn.hgetall(f"taskgate:apikey:{key.split('_')[1]}")
    conn.close()
    assert key.split("_", 2)[2].encode() not in b"".join(stored.values())
    assert stored[b"owner"] == b"carol"
    reserved = cli(redis_url, "keys", "create", "--owner=anonymous")  # the owner of auth-off requests
    assert reserved.returncode == 2 and "reserved" in reserved.stderr


def test_auth_auto_is_on_for_a_public_bind(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "taskgate", "api", "--host=0.0.0.0", f"--port={port}"],
                                env=env_for(redis_url), stdout=out, stderr=subprocess.STDOUT, cwd=OUTSIDE)
    try:
        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 30, "the API")
        assert httpx.get(f"http://127.0.0.1:{port}/tasks").status_code == 401
    finally:
        stop(proc)


def test_auth_off_on_a_public_bind_refuses_to_start(redis_url: str) -> None:
    env = {**env_for(redis_url), "TASKGATE_AUTH": "off"}
    result = subprocess.run([sys.executable, "-m", "taskgate", "api", "--host=0.0.0.0", f"--port={free_port()}"],
                            env=env, capture_output=True, text=True, timeout=60, cwd=OUTSIDE)
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in result.stderr
    assert "TASKGATE_INSECURE_NO_AUTH" in result.stderr


def test_quotas_are_shared_by_replicas(redis_url: str, tmp_path: Path) -> None:
    env = {"TASKGATE_AUTH": "on", "TASKGATE_SUBMIT_RATE": "5"}
    first, base_a = start_api(redis_url, tmp_path / "a.log", **env)
    second, base_b = start_api(redis_url, tmp_path / "b.log", **env)
    key = bearer(new_key(redis_url, f"quota-{uuid.uuid4().hex[:6]}"))
    try:
        codes = [httpx.get(f"{base}/add?x=1&y=1", headers=key).status_code
                 for base in [base_a, base_b, base_a, base_b, base_a]]
        assert codes == [200] * 5
        refused = httpx.get(f"{base_b}/add?x=1&y=1", headers=key)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "quota_exceeded"
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        other = bearer(new_key(redis_url, f"other-{uuid.uuid4().hex[:6]}"))
        assert httpx.get(f"{base_a}/add?x=1&y=1", headers=other).status_code == 200
    finally:
        stop(first)
        stop(second)


def test_in_flight_limit(redis_url: str, tmp_path: Path) -> None:
    proc, base = start_api(redis_url, tmp_path / "api.log", TASKGATE_AUTH="on", TASKGATE_MAX_IN_FLIGHT="2",
                           TASKGATE_DEFAULT_QUEUE=f"nobody-{tmp_path.name}")
    key = bearer(new_key(redis_url, f"busy-{uuid.uuid4().hex[:6]}"))
    try:
        with httpx.Client(base_url=base, headers=key, timeout=10) as http:
            first = http.get("/add?x=1&y=1").json()["task_id"]
            assert http.get("/add?x=1&y=1").status_code == 200
            assert http.get("/add?x=1&y=1").status_code == 429
            assert http.post(f"/tasks/{first}/cancel").json()["state"] == "cancelled"
            assert http.get("/add?x=1&y=1").status_code == 200
    finally:
        stop(proc)


def test_large_json_body_is_413(client: httpx.Client) -> None:
    big = {"customer": "x", "amounts_cents": [1] * 600_000}  # 1.2 MB of JSON
    response = client.post("/tasks/make_invoice", json=big)
    assert response.status_code == 413
    assert "TASKGATE_MAX_BODY_BYTES" in response.json()["error"]["message"]


def test_pickle_message_is_refused_and_reported(client: httpx.Client, redis_url: str, tmp_path: Path) -> None:
    """A pickle-serialised message injected into the queue is never run, and its task fails."""
    import pickle

    marker = tmp_path / "ran"
    offline = {"TASKGATE_DEFAULT_QUEUE": f"parked-{tmp_path.name}"}
    proc, base = start_api(redis_url, tmp_path / "api.log", **offline)
    try:
        task_id = httpx.post(f"{base}/tasks/logged_sleep",
                             json={"log": str(marker), "token": "x", "seconds": 0}).json()["task_id"]
    finally:
        stop(proc)
    body = pickle.dumps(((), {"log": str(marker), "token": "pickled", "seconds": 0}, {}))
    message = {
        "body": base64.b64encode(body).decode(), "content-encoding": "binary",
        "content-type": "application/x-python-serialize",
        "headers": {"lang": "py", "task": "taskgate.logged_sleep", "id": task_id, "root_id": task_id,
                    "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
                    "timelimit": [None, None], "argsrepr": "", "kwargsrepr": "", "origin": "attacker",
                    "ignore_result": True},
        "properties": {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0,
                       "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())},
    }
    conn = redis.Redis.from_url(redis_url)
    conn.lpush("celery", json.dumps(message))
    conn.close()
    task = wait(client, task_id, 20)
    assert task["state"] == "failed", task
    assert task["error"]["type"] == "ContentDisallowed"
    assert not marker.exists(), "the pickled task ran"


def test_flower_refuses_a_public_bind_without_password(redis_url: str) -> None:
    result = subprocess.run([sys.executable, "-m", "taskgate", "flower", "--host=0.0.0.0", f"--port={free_port()}"],
                            env=env_for(redis_url), capture_output=True, text=True, timeout=60, cwd=OUTSIDE)
    assert result.returncode == 2
    assert "TASKGATE_FLOWER_BASIC_AUTH" in result.stderr


def test_flower_with_password_requires_it(redis_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {**env_for(redis_url), "TASKGATE_FLOWER_BASIC_AUTH": "ops:s3cret", "FLOWER_UNAUTHENTICATED_API": "1"}
    log = tmp_path / "flower.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "taskgate", "flower", f"--port={port}"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=OUTSIDE)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                httpx.get(url, timeout=2)
                return True
            except httpx.TransportError:
                return False

        wait_for(up, 30, "Flower")
        assert httpx.get(url).status_code == 401
        assert httpx.get(f"{url}/api/workers").status_code == 401
        assert httpx.get(f"{url}/api/workers", auth=("ops", "s3cret")).status_code == 200
    finally:
        stop(proc)


def test_get_add_is_refused_to_another_sites_page_with_auth_off(client: httpx.Client) -> None:
    """With auth off nothing tells an ``<img src=".../add?x=1&y=2">`` on another site from the
    user's own request but where the browser says it comes from: another site, or another port
    or subdomain of this one (``same-site``), is refused; typed, bookmarked, the same origin and
    scripts (no such header) are not."""
    for site in ("cross-site", "same-site"):
        refused = client.get("/add", params={"x": 1, "y": 2}, headers={"Sec-Fetch-Site": site})
        assert refused.status_code == 403, (site, refused.text)
        assert refused.json()["error"]["type"] == "forbidden"
    foreign = client.get("/add", params={"x": 1, "y": 2}, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403, foreign.text
    for headers in ({"Sec-Fetch-Site": "none"}, {"Sec-Fetch-Site": "same-origin"}, {}):
        task_id = client.get("/add", params={"x": 20, "y": 22}, headers=headers).json()["task_id"]
        assert wait(client, task_id)["result"] == 42


def test_every_status_the_guards_answer_is_in_the_openapi(client: httpx.Client) -> None:
    """A body over TASKGATE_MAX_BODY_BYTES is a 413 on every route that reads one (the batch
    and bulk routes too), and another site's page a 403 on every route that changes something:
    each such route says so in its OpenAPI."""
    big = {"items": [{"x": 1, "y": 2}] * 120_000}  # about 1.9 MB of JSON
    for path in ("/tasks/add/batch", "/tasks/cancel"):
        refused = client.post(path, json=big)
        assert refused.status_code == 413, (path, refused.text)
        assert refused.json()["error"]["type"] == "payload_too_large"
    paths = client.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            if method in ("post", "put", "patch"):
                assert "413" in documented, f"{method.upper()} {path}"
            if method not in ("get", "head") or path == "/add":
                assert "403" in documented, f"{method.upper()} {path}"

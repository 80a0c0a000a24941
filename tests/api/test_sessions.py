"""The dashboard's sessions over HTTP (the browser's side is in tests/ui): an API key exchanged
for a cookie, the cookie accepted like the key, changes needing the CSRF token, revoking the key
or logging in again ending the session, and logins from another site's page refused."""

from __future__ import annotations

import html
import json
import re
import subprocess

import httpx

from taskgate import auth
from taskgate.api.app import create_app
from taskgate.config import Settings

from .. import helpers, inprocess
from .test_auth import cli, new_key


def test_a_session_acts_as_its_key_until_the_key_is_revoked(secured: str, redis_url: str,
                                                             worker: subprocess.Popen[bytes]) -> None:
    key = new_key(redis_url, "carol-ui")
    with httpx.Client(base_url=secured, timeout=10) as http:
        assert http.get("/ui/session").json() == {"auth": True, "owner": None, "admin": False, "csrf": None,
                                                  "trace_url": None}
        assert http.post("/ui/session", json={"key": "tg_nope"}).status_code == 401
        opened = http.post("/ui/session", json={"key": key})
        assert opened.status_code == 200, opened.text
        csrf = opened.json()["csrf"]
        cookie = opened.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert key not in cookie
        assert http.get("/ui/session").json()["owner"] == "carol-ui"
        task_id = http.post("/tasks/add", json={"x": 1, "y": 2}, headers={"X-CSRF-Token": csrf}).json()["task_id"]
        assert http.get(f"/tasks/{task_id}").json()["owner"] == "carol-ui"
        refused = http.post("/tasks/add", json={"x": 1, "y": 2})
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.text
        assert http.post("/tasks/add", json={"x": 1, "y": 2}, headers={"X-CSRF-Token": "wrong"}).status_code == 403
        key_id = auth.parse(key)[0]  # type: ignore[index]
        assert cli(redis_url, "keys", "revoke", key_id).returncode == 0
        assert http.get(f"/tasks/{task_id}").status_code == 401, "revoking the key ended the session"


def test_logging_in_again_ends_the_old_session_and_other_sites_cannot_log_in(
        secured: str, redis_url: str) -> None:
    key = new_key(redis_url, "dave-ui")
    with httpx.Client(base_url=secured, timeout=10) as http:
        http.post("/ui/session", json={"key": key})
        old = http.cookies["taskgate_session"]
        csrf = http.post("/ui/session", json={"key": key}).json()["csrf"]
        assert http.cookies["taskgate_session"] != old
        assert httpx.get(secured + "/tasks", cookies={"taskgate_session": old}, timeout=10).status_code == 401
        other_site = http.post("/ui/session", json={"key": key}, headers={"Origin": "http://evil.example"})
        assert other_site.status_code == 403
        assert http.delete("/ui/session", headers={"Origin": "http://evil.example"}).status_code == 403
        assert http.delete("/ui/session", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert http.get("/ui/session").json()["owner"] is None


def test_the_page_comes_with_its_session_and_is_never_cached(secured: str, redis_url: str) -> None:
    key = new_key(redis_url, "erin-ui")
    with httpx.Client(base_url=secured, timeout=10) as http:
        def given() -> dict[str, object]:
            page = http.get("/ui/tasks/some-id")
            assert page.headers["cache-control"] == "no-store"  # it may hold the CSRF token
            found = re.search(r'<meta name="taskgate-session" content="([^"]*)">', page.text)
            assert found is not None, page.text
            return json.loads(html.unescape(found[1]))

        assert given() == http.get("/ui/session").json() == {"auth": True, "owner": None, "admin": False,
                                                              "csrf": None, "trace_url": None}
        http.post("/ui/session", json={"key": key})
        assert given() == http.get("/ui/session").json()
        assert given()["owner"] == "erin-ui" and given()["csrf"]


def test_get_add_needs_the_session_csrf_token_and_no_other_page_may_ask_for_it(
        secured: str, redis_url: str, worker: subprocess.Popen[bytes]) -> None:
    """``GET /add`` queues a task: with a session's cookie it needs the CSRF token like a POST,
    and a page on another port of the same host (Sec-Fetch-Site ``same-site``: the cookie rides
    along) is another origin, refused whatever it carries."""
    key = new_key(redis_url, "gina-ui")
    with httpx.Client(base_url=secured, timeout=10) as http:
        csrf = http.post("/ui/session", json={"key": key}).json()["csrf"]
        bare = http.get("/add", params={"x": 1, "y": 2}, headers={"Sec-Fetch-Site": "same-origin"})
        assert bare.status_code == 403 and "X-CSRF-Token" in bare.json()["error"]["message"], bare.text
        other_port = http.get("/add", params={"x": 1, "y": 2},
                              headers={"Sec-Fetch-Site": "same-site", "X-CSRF-Token": csrf})
        assert other_port.status_code == 403, other_port.text
        assert "another site's page" in other_port.json()["error"]["message"]
        cross = http.get("/add", params={"x": 1, "y": 2}, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403, cross.text
        assert http.get("/tasks", params={"limit": 10}).json()["tasks"] == [], "nothing was queued"
        done = http.get("/add", params={"x": 1, "y": 2},
                        headers={"Sec-Fetch-Site": "same-origin", "X-CSRF-Token": csrf})
        assert done.status_code == 200, done.text
        assert http.get(f"/tasks/{done.json()['task_id']}").json()["owner"] == "gina-ui"
        assert http.get("/ui/session").json()["owner"] == "gina-ui", "reading needs no token"


def test_logging_out_needs_the_csrf_token(secured: str, redis_url: str) -> None:
    key = new_key(redis_url, "hal-ui")
    with httpx.Client(base_url=secured, timeout=10) as http:
        csrf = http.post("/ui/session", json={"key": key}).json()["csrf"]
        refused = http.delete("/ui/session")
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["error"]["message"]
        assert http.delete("/ui/session", headers={"X-CSRF-Token": "wrong"}).status_code == 403
        assert http.get("/ui/session").json()["owner"] == "hal-ui", "the session is still open"
        assert http.delete("/ui/session", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert http.get("/ui/session").json()["owner"] is None
        assert http.delete("/ui/session").status_code == 204, "no session left: nothing to guard"


def test_the_trace_url_is_given_to_a_page_that_may_read_tasks(redis_url: str) -> None:
    template = "https://jaeger.example/trace/{trace_id}?uiEmbed=v0"
    settings = Settings(redis_url=redis_url, auth="on", trace_url=template, data_dir=helpers.DATA_DIR)
    key = new_key(redis_url, "ivy-ui")
    with inprocess.serve(create_app(settings)) as http:
        assert http.get("/ui/session").json()["trace_url"] is None, "not logged in: not said"
        assert http.post("/ui/session", json={"key": key}).json()["trace_url"] == template
        assert http.get("/ui/session").json()["trace_url"] == template

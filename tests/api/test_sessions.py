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

from .test_auth import cli, new_key


def test_a_session_acts_as_its_key_until_the_key_is_revoked(secured: str, redis_url: str,
                                                             worker: subprocess.Popen[bytes]) -> None:
    key = new_key(redis_url, "carol-ui")
    with httpx.Client(base_url=secured, timeout=10) as http:
        assert http.get("/ui/session").json() == {"auth": True, "owner": None, "admin": False, "csrf": None}
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
        http.post("/ui/session", json={"key": key})
        assert http.cookies["taskgate_session"] != old
        assert httpx.get(secured + "/tasks", cookies={"taskgate_session": old}, timeout=10).status_code == 401
        other_site = http.post("/ui/session", json={"key": key}, headers={"Origin": "http://evil.example"})
        assert other_site.status_code == 403
        assert http.delete("/ui/session", headers={"Origin": "http://evil.example"}).status_code == 403
        assert http.delete("/ui/session").status_code == 204
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
                                                              "csrf": None}
        http.post("/ui/session", json={"key": key})
        assert given() == http.get("/ui/session").json()
        assert given()["owner"] == "erin-ui" and given()["csrf"]

"""Schedules over HTTP against the session's API and worker: the lifecycle (create, read,
change, pause, resume, run now, delete), the 4xx a bad definition gets, the per-owner limit,
and owners kept apart (alice cannot see or touch bob's: 404). Firing itself is tested in
``tests/worker/test_scheduler.py``, on private servers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from ..helpers import start_api, stop, wait_result
from .test_auth import bearer, new_key

HOURLY = {"task": "add", "arguments": {"x": 1, "y": 2}, "every": 3600}


@pytest.fixture
def made(client: httpx.Client) -> Iterator[list[str]]:
    """Ids of the schedules a test made, deleted after it (the session worker would fire them)."""
    ids: list[str] = []
    yield ids
    for schedule_id in ids:
        client.delete(f"/schedules/{schedule_id}")


def test_lifecycle(client: httpx.Client, made: list[str]) -> None:
    created = client.post("/schedules", json={**HOURLY, "name": "sums", "overlap": "skip"})
    assert created.status_code == 201, created.text
    body = created.json()
    made.append(schedule_id := body["schedule_id"])
    assert created.headers["location"] == f"/schedules/{schedule_id}"
    assert body["name"] == "sums" and body["every"] == 3600 and body["overlap"] == "skip"
    assert body["enabled"] is True and body["last_run_at"] is None
    next_run = datetime.fromisoformat(body["next_run_at"])
    assert timedelta(seconds=3590) < next_run - datetime.fromisoformat(body["created_at"]) <= timedelta(seconds=3600)
    assert schedule_id in [s["schedule_id"] for s in client.get("/schedules").json()["schedules"]]

    paused = client.post(f"/schedules/{schedule_id}/pause").json()
    assert paused["enabled"] is False and paused["next_run_at"] is None
    resumed = client.post(f"/schedules/{schedule_id}/resume").json()
    assert resumed["enabled"] is True and resumed["next_run_at"] is not None

    changed = client.patch(f"/schedules/{schedule_id}", json={"cron": "0 3 * * *", "timezone": "Europe/Berlin",
                                                             "arguments": {"x": 5, "y": 6}})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["cron"], body["every"], body["timezone"], body["arguments"]) == (
        "0 3 * * *", None, "Europe/Berlin", {"x": 5, "y": 6})
    nightly = datetime.fromisoformat(body["next_run_at"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert nightly.strftime("%H:%M") == "03:00" and nightly - datetime.now(UTC) < timedelta(hours=24)

    run = client.post(f"/schedules/{schedule_id}/run")
    assert run.status_code == 202, run.text
    task_id = run.json()["task_id"]
    assert run.headers["location"] == f"/tasks/{task_id}"
    assert wait_result(client, task_id)["result"] == 11
    task = client.get(f"/tasks/{task_id}").json()
    assert task["schedule_id"] == schedule_id and task["tick"] is None
    view = client.get(f"/schedules/{schedule_id}").json()
    assert [(r["task_id"], r["state"]) for r in view["recent_runs"]] == [(task_id, "succeeded")]
    assert view["next_run_at"] == body["next_run_at"], "a run now leaves the schedule's ticks"
    listed = client.get("/tasks", params={"schedule_id": schedule_id}).json()["tasks"]
    assert [t["task_id"] for t in listed] == [task_id]

    assert client.delete(f"/schedules/{schedule_id}").status_code == 204
    for method, path in [("GET", ""), ("PATCH", ""), ("POST", "/pause"), ("POST", "/resume"), ("POST", "/run"),
                         ("DELETE", "")]:
        gone = client.request(method, f"/schedules/{schedule_id}{path}", json={} if method == "PATCH" else None)
        assert gone.status_code == 404, (method, path, gone.text)
        assert gone.json()["error"]["message"] == f"no schedule with id {schedule_id!r}"
    assert client.get(f"/tasks/{task_id}").status_code == 200, "its runs stay, as tasks"


@pytest.mark.parametrize(("body", "says"), [
    ({**HOURLY, "every": None, "cron": "61 * * * *"}, "cron: '61 * * * *' is not valid"),
    ({**HOURLY, "every": None, "cron": "0 3 * *"}, "five fields"),
    ({**HOURLY, "every": None, "cron": "0 3 * * *", "timezone": "Europe/Atlantis"}, "unknown time zone"),
    ({**HOURLY, "every": 0.5}, "every: 0.5 seconds is out of range"),
    ({**HOURLY, "every": 1e12}, "out of range"),
    ({**HOURLY, "every": None}, "give either cron or every"),
    ({**HOURLY, "cron": "* * * * *"}, "give either cron or every"),
    ({**HOURLY, "task": "nope"}, "task: no task named 'nope'"),
    ({**HOURLY, "arguments": {"x": 1}}, "argument 'y': Field required"),
    ({**HOURLY, "arguments": {"x": "one", "y": 2}}, "argument 'x'"),
    ({**HOURLY, "overlap": "never"}, "overlap"),
    ({**HOURLY, "surprise": 1}, "surprise"),
    ({**HOURLY, "name": "\ud800"}, "body field 'name'"),
    ({**HOURLY, "task": "stamped", "arguments": {"log": "\ud800"}}, "portable JSON"),
])
def test_bad_definitions_are_422_naming_the_field(client: httpx.Client, body: dict[str, object], says: str) -> None:
    # json.dumps escapes a lone surrogate (\ud800), as any client may send it
    response = client.post("/schedules", content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert says in response.text


def test_a_bad_patch_changes_nothing(client: httpx.Client, made: list[str]) -> None:
    made.append(schedule_id := client.post("/schedules", json=HOURLY).json()["schedule_id"])
    for change in ({"cron": "0 99 * * *"}, {"arguments": {"x": 1}}, {"cron": "* * * * *", "every": 5}):
        assert client.patch(f"/schedules/{schedule_id}", json=change).status_code == 422, change
    assert client.get(f"/schedules/{schedule_id}").json()["every"] == 3600


def test_owners_are_kept_apart_and_limited(redis_url: str, tmp_path: Path,
                                           worker: subprocess.Popen[bytes]) -> None:
    proc, base = start_api(redis_url, tmp_path / "api.log", TASKGATE_AUTH="on", TASKGATE_MAX_SCHEDULES="2")
    alice, bob, admin = (new_key(redis_url, "alice-s"), new_key(redis_url, "bob-s"),
                         new_key(redis_url, "root-s", admin=True))
    made: list[str] = []
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.post("/schedules", json=HOURLY).status_code == 401
            mine = http.post("/schedules", json=HOURLY, headers=bearer(bob)).json()
            made.append(bobs := mine["schedule_id"])
            assert mine["owner"] == "bob-s"
            for method, path in [("GET", ""), ("PATCH", ""), ("POST", "/pause"), ("POST", "/run"), ("DELETE", "")]:
                response = http.request(method, f"/schedules/{bobs}{path}", headers=bearer(alice),
                                        json={"every": 60} if method == "PATCH" else None)
                assert response.status_code == 404, (method, path, response.text)
            assert http.get("/schedules", headers=bearer(alice)).json()["schedules"] == []
            run = http.post(f"/schedules/{bobs}/run", headers=bearer(bob)).json()["task_id"]
            assert http.get(f"/tasks/{run}", headers=bearer(bob)).json()["owner"] == "bob-s"
            assert [t["task_id"] for t in http.get("/tasks", params={"schedule_id": bobs},
                                                   headers=bearer(bob)).json()["tasks"]] == [run]
            assert http.get("/tasks", params={"schedule_id": bobs}, headers=bearer(alice)).status_code == 404
            assert bobs in [s["schedule_id"] for s in http.get("/schedules", headers=bearer(admin)).json()["schedules"]]
            made.append(http.post("/schedules", json=HOURLY, headers=bearer(bob)).json()["schedule_id"])
            over = http.post("/schedules", json=HOURLY, headers=bearer(bob))
            assert over.status_code == 429 and "TASKGATE_MAX_SCHEDULES" in over.text, over.text
            assert http.post("/schedules", json=HOURLY, headers=bearer(alice)).status_code == 201, \
                "the limit is per owner"
            made += [s["schedule_id"] for s in http.get("/schedules", headers=bearer(alice)).json()["schedules"]]
            for schedule_id in made:
                assert http.delete(f"/schedules/{schedule_id}", headers=bearer(admin)).status_code == 204
    finally:
        stop(proc)

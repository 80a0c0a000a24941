"""Replay and the bulk actions, against the session's worker: a replay is a new task with the
same arguments that says what it replays; bulk cancel and replay by ids or by filter, bulk
requeue and drop of dead letters; each item answered on its own."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
from redis import Redis

from taskgate.records import keys

from ..helpers import submit, wait, wait_for, wait_result


def test_replay_is_a_new_task_with_the_same_arguments(client: httpx.Client, redis_url: str) -> None:
    first = submit(client, "add", {"x": 2, "y": 3})
    assert wait_result(client, first)["result"] == 5
    assert client.get(f"/tasks/{first}").json()["arguments"] == {"x": 2, "y": 3}
    replayed = client.post(f"/tasks/{first}/replay")
    assert replayed.status_code == 202, replayed.text
    body = replayed.json()
    assert body["replay_of"] == first and body["name"] == "add" and body["task_id"] != first
    assert replayed.headers["location"] == f"/tasks/{body['task_id']}"
    again = wait(client, body["task_id"])
    assert (again["state"], again["result"], again["replay_of"], again["arguments"]) == (
        "succeeded", 5, first, {"x": 2, "y": 3})
    assert client.post("/tasks/nope/replay").status_code == 404
    Redis.from_url(redis_url).hdel(keys.record(first), "args")  # as an earlier version wrote it
    refused = client.post(f"/tasks/{first}/replay")
    assert refused.status_code == 409 and "no stored arguments" in refused.text


def test_bulk_cancel_by_ids_answers_each_item(client: httpx.Client) -> None:
    waiting = [client.post("/tasks/add", params={"countdown": 600}, json={"x": i, "y": 0}).json()["task_id"]
               for i in range(3)]
    done = submit(client, "add", {"x": 1, "y": 1})
    wait_result(client, done)
    answer = client.post("/tasks/cancel", json={"task_ids": [*waiting, done, "nope", waiting[0]]})
    assert answer.status_code == 200, answer.text
    results = {item["task_id"]: item for item in answer.json()["results"]}
    assert len(answer.json()["results"]) == 5, "each id once"
    assert all(results[task_id]["ok"] and results[task_id]["state"] == "cancelled" for task_id in waiting)
    assert results[done]["ok"] is False and results[done]["error"]["type"] == "conflict"
    assert results["nope"]["error"]["type"] == "task_not_found"
    for body in ({}, {"task_ids": []}, {"task_ids": ["a"], "filter": {}}, {"task_ids": ["x"] * 1001},
                 {"filter": {"since": "2026-01-01T00:00:00"}}):
        assert client.post("/tasks/cancel", json=body).status_code == 422, body


def test_bulk_replay_by_filter(client: httpx.Client, tmp_path: Path) -> None:
    since = datetime.now(UTC).isoformat()
    log = str(tmp_path / "runs")
    made = [submit(client, "stamped", {"log": log}) for _ in range(3)]
    for task_id in made:
        wait_result(client, task_id)
    answer = client.post("/tasks/replay", json={"filter": {"name": "stamped", "state": "succeeded", "since": since}})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [item["task_id"] for item in results] == made[::-1], "the filter's tasks, newest first"
    fresh = [item["new_task_id"] for item in results]
    for task_id in fresh:
        assert wait_result(client, task_id)["status"] == "completed"
    starts = [line.split()[1] for line in Path(log).read_text().splitlines() if line.startswith("start")]
    assert sorted(starts) == sorted(made + fresh), "each original and each replay ran once"


def test_bulk_requeue_and_drop_dead_letters(client: httpx.Client, tmp_path: Path) -> None:
    dead = [submit(client, "flaky", {"counter": str(tmp_path / f"n{i}"), "failures": 99}) for i in range(3)]

    def all_dead() -> bool:
        listed = {d["task_id"] for d in client.get("/dead-letters", params={"limit": 100}).json()["dead_letters"]}
        return set(dead) <= listed

    wait_for(all_dead, 60, "three dead letters")
    requeued = client.post("/dead-letters/requeue", json={"task_ids": [dead[0], "nope"]}).json()["results"]
    assert requeued[0]["ok"] and requeued[0]["state"] in ("queued", "started", "retrying"), requeued
    assert client.get(f"/tasks/{dead[0]}").json()["state"] in ("queued", "started", "retrying", "failed")
    assert requeued[1]["error"]["type"] == "task_not_found"
    dropped = client.post("/dead-letters/drop", json={"task_ids": dead[1:]}).json()["results"]
    assert [item["ok"] for item in dropped] == [True, True]
    listed = {d["task_id"] for d in client.get("/dead-letters", params={"limit": 100}).json()["dead_letters"]}
    assert not set(dead[1:]) & listed


def test_a_bulk_body_not_sent_as_json_says_so(client: httpx.Client) -> None:
    for headers in ({}, {"Content-Type": "text/plain"}):
        refused = client.post("/tasks/cancel", content=b'{"task_ids": ["x"]}', headers=headers)
        assert refused.status_code == 422
        assert "Content-Type: application/json" in refused.json()["error"]["message"], refused.text
    missing = client.post("/tasks/cancel", json={})
    assert missing.status_code == 422 and "task_ids or filter" in missing.json()["error"]["message"]

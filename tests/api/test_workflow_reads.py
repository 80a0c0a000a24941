"""Reading workflows over HTTP: ``GET /workflows`` (pages, filters, owners) and
``GET /workflows/{id}/events`` (Server-Sent Events), against the session's Valkey and real
worker. A stream is read as it comes from a real API process (``secured``); the in-process
client hands a stream back whole once it ended."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

from taskgate import auth

from ..helpers import sse_events, stream_events
from .test_workflows import ended, submit


def page(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/workflows", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def listed(client: httpx.Client, **params: Any) -> list[str]:
    """Every workflow id the list gives, following its cursors."""
    ids: list[str] = []
    cursor = None
    for _ in range(100):
        body = page(client, **params, **({"cursor": cursor} if cursor else {}))
        ids += [item["workflow_id"] for item in body["workflows"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError(f"no end to the pages of {params}")


def finished(client: httpx.Client, workflow_id: str) -> dict[str, Any]:
    """The workflow once it ended: the last event of its stream (which ends with it)."""
    events = sse_events(client, f"/workflows/{workflow_id}/events")
    last = events[-1]["data"]
    assert isinstance(last, dict) and last["finished_at"] is not None, events
    return last


def test_pages_newest_first_filtered_by_name_and_state(client: httpx.Client) -> None:
    name = f"pages-{uuid.uuid4().hex[:8]}"
    ids = [submit(client, {"sum": {"task": "add", "arguments": {"x": i, "y": 1}}}, name=name)["workflow_id"]
           for i in range(5)]
    bad = submit(client, {"bad": {"task": "boom", "arguments": {"message": "no"}},
                          "after": {"task": "add", "arguments": {"x": 1, "y": 1}, "after": ["bad"]}},
                 name=name)["workflow_id"]
    ids.append(bad)
    assert [finished(client, wid)["state"] for wid in ids] == ["succeeded"] * 5 + ["failed"]
    newest_first = ids[::-1]

    first = page(client, name=name, limit=2)
    assert [item["workflow_id"] for item in first["workflows"]] == newest_first[:2]
    assert first["next_cursor"] is not None
    assert listed(client, name=name, limit=2) == newest_first
    assert listed(client, name=name, limit=100) == newest_first

    failed = page(client, name=name, state="failed")["workflows"]
    assert [item["workflow_id"] for item in failed] == [bad]
    summary = failed[0]
    assert {k: summary[k] for k in ("name", "state", "owner", "nodes", "left", "failed")} == \
        {"name": name, "state": "failed", "owner": None, "nodes": 2, "left": 0, "failed": 1}  # skipped: not failed
    assert summary["created_at"] <= summary["finished_at"]
    assert set(summary) == {"workflow_id", "name", "state", "owner", "created_at", "finished_at",
                            "nodes", "left", "failed"}
    ok = page(client, name=name, state="succeeded", limit=1)["workflows"][0]
    assert (ok["workflow_id"], ok["nodes"], ok["left"], ok["failed"]) == (ids[4], 1, 0, 0)
    assert page(client, name=name, state="running")["workflows"] == []
    assert listed(client, name=name, owner="anonymous") == newest_first  # auth off: nobody's
    assert listed(client, name=f"{name}-other") == []

    for params in ({"limit": 0}, {"limit": 101}, {"state": "queued"}, {"cursor": "yesterday"}):
        response = client.get("/workflows", params=params)
        assert response.status_code == 422, (params, response.text)


def bearer(client: redis.Redis, owner: str, admin: bool = False) -> dict[str, str]:
    """The headers of a new API key of ``owner``."""
    return {"Authorization": f"Bearer {auth.create(client, owner, admin)[1]}"}


def test_an_owner_sees_lists_cancels_and_follows_only_its_own(
        secured: str, redis_url: str, worker: subprocess.Popen[bytes], tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    with redis.Redis.from_url(redis_url) as r:
        alice, bob = bearer(r, f"alice-{tag}"), bearer(r, f"bob-{tag}")
        admin = bearer(r, f"ops-{tag}", admin=True)
    name = f"owned-{tag}"
    nodes = {"slow": {"task": "sleepy", "arguments": {"seconds": 30, "started_file": str(tmp_path / "s")}},
             "next": {"task": "add", "arguments": {"x": 1, "y": 1}, "after": ["slow"]}}
    with httpx.Client(base_url=secured, timeout=30) as http:
        created = http.post("/workflows", json={"name": name, "nodes": nodes}, headers=alice)
        assert created.status_code == 202, created.text
        wid = created.json()["workflow_id"]
        mine = http.post("/workflows", json={"name": name, "nodes": {
            "sum": {"task": "add", "arguments": {"x": 1, "y": 1}}}}, headers=bob).json()["workflow_id"]

        for method, path in [("GET", f"/workflows/{wid}"), ("POST", f"/workflows/{wid}/cancel"),
                             ("GET", f"/workflows/{wid}/events")]:
            response = http.request(method, path, headers=bob)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["type"] == "workflow_not_found"
        assert [w["workflow_id"] for w in http.get("/workflows", params={"name": name},
                                                   headers=bob).json()["workflows"]] == [mine]
        refused = http.get("/workflows", params={"owner": f"alice-{tag}"}, headers=bob)
        assert refused.status_code == 403 and "admin" in refused.json()["error"]["message"]
        own = http.get("/workflows", params={"name": name}, headers=alice).json()["workflows"]
        assert [(w["workflow_id"], w["owner"], w["state"]) for w in own] == [(wid, f"alice-{tag}", "running")]
        assert http.get("/workflows", params={"owner": f"alice-{tag}"}, headers=alice).status_code == 200

        everyone = http.get("/workflows", params={"name": name}, headers=admin).json()["workflows"]
        assert [w["workflow_id"] for w in everyone] == [mine, wid]
        by_owner = http.get("/workflows", params={"owner": f"alice-{tag}"}, headers=admin).json()["workflows"]
        assert [w["workflow_id"] for w in by_owner] == [wid]
        assert http.get(f"/workflows/{wid}", headers=admin).json()["owner"] == f"alice-{tag}"
        with http.stream("GET", f"/workflows/{wid}/events", headers=admin) as stream:
            assert stream.status_code == 200
            first = next(events(stream))
            assert (first["event"], first["data"]["workflow_id"], first["data"]["state"]) == \
                ("workflow", wid, "running")
        cancelled = http.post(f"/workflows/{wid}/cancel", headers=admin)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
        http.headers.update(alice)
        assert ended(http, created.json()["tasks"]["slow"])["state"] == "cancelled"


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The events of a stream as they come: {event, id (a number), data}."""
    for event in stream_events(response):
        yield {**event, "id": int(event["id"])}


def test_the_stream_sends_the_workflow_then_each_change_until_it_ends(
        secured: str, redis_url: str, worker: subprocess.Popen[bytes], tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    hold.write_text("")
    with redis.Redis.from_url(redis_url) as r:
        key = bearer(r, f"watcher-{uuid.uuid4().hex[:8]}")
    with httpx.Client(base_url=secured, headers=key, timeout=30) as http:
        try:
            created = http.post("/workflows", json={"name": "watched", "nodes": {
                "held": {"task": "gated", "arguments": {"log": str(tmp_path / "log"), "token": "t",
                                                        "hold": str(hold)}},
                "sum": {"task": "add", "arguments": {"x": 1, "y": 2}, "after": ["held"]}}})
            assert created.status_code == 202, created.text
            wid = created.json()["workflow_id"]
            path = f"/workflows/{wid}/events"
            with http.stream("GET", path) as stream, \
                    http.stream("GET", path, headers={"Last-Event-ID": "0"}) as resumed_early:
                assert stream.status_code == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                seen = events(stream)
                first = next(seen)
                assert first["event"] == "workflow"
                view = first["data"]
                assert (view["state"], view["finished_at"]) == ("running", None)
                assert {n: node["state"] for n, node in view["nodes"].items()} == \
                    {"held": "released", "sum": "waiting"}
                assert view == http.get(f"/workflows/{wid}").json() | {"nodes": view["nodes"]}
                # Resuming at the latest change: nothing until the next one. Its 200 came after
                # its subscription was confirmed, so releasing the hold now misses nothing.
                with http.stream("GET", path, headers={"Last-Event-ID": str(first["id"])}) as resumed:
                    assert resumed.status_code == 200
                    hold.unlink()
                    rest = list(seen)
                    later = list(events(resumed))
                early = list(events(resumed_early))
        finally:
            hold.unlink(missing_ok=True)

        assert rest, "no event after the first"
        last = rest[-1]["data"]
        assert (last["state"], last["result"], last["nodes"]["sum"]["state"]) == ("succeeded", 3, "succeeded")
        assert last["finished_at"] is not None
        assert all(event["data"]["finished_at"] is None for event in rest[:-1])
        assert [event["event"] for event in rest] == ["workflow"] * len(rest)
        ids = [first["id"]] + [event["id"] for event in rest]
        assert ids == sorted(set(ids)), ids
        states = [event["data"]["nodes"]["held"]["state"] for event in rest]
        assert states[-1] == "succeeded" and set(states) <= {"released", "succeeded"}
        assert later and all(event["id"] > first["id"] for event in later), later
        assert later[-1] == rest[-1]
        assert early[0]["id"] == first["id"] and early[-1] == rest[-1]

        # Once it ended: a stream from the last id ends at once; from an earlier one it gives
        # only the workflow as it ended; without one, the same.
        assert sse_events(http, path, headers={"Last-Event-ID": str(ids[-1])}) == []
        for headers in ({"Last-Event-ID": str(first["id"])}, {}):
            again = sse_events(http, path, headers=headers)
            assert [(e["id"], e["data"]) for e in again] == [(str(ids[-1]), last)]

"""The typed task catalogue and the task lifecycle, against a real Valkey, API and worker."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..helpers import lines, sse_events, start_api, start_worker, stop, submit, wait, wait_for


def test_typed_submit_and_result(client: httpx.Client) -> None:
    response = client.post("/tasks/add", json={"x": 40, "y": 2})
    assert response.status_code == 202
    accepted = response.json()
    assert accepted["state"] == "queued" and accepted["name"] == "add"
    task = wait(client, accepted["task_id"])
    assert task["state"] == "succeeded"
    assert task["result"] == 42
    assert task["attempts"] == 1 and task["error"] is None
    created, started, finished = (dt.datetime.fromisoformat(task[k])
                                  for k in ("created_at", "started_at", "finished_at"))
    assert created <= started <= finished


def test_user_task_from_task_modules(client: httpx.Client) -> None:
    """The README's example module, loaded through TASKGATE_TASK_MODULES."""
    task_id = submit(client, "make_invoice", {"customer": "ACME", "amounts_cents": [1000, 250],
                                              "discount_percent": 10})
    task = wait(client, task_id)
    assert task["state"] == "succeeded", task
    assert task["result"] == {"customer": "ACME", "lines": 2, "total_cents": 1125}
    assert task["progress"] == {"done": 2, "total": 2, "percent": 100.0, "message": None}
    # Integers stay integers (not 2.0): the JSON carries the type the task reported.
    assert type(task["progress"]["done"]) is int and type(task["progress"]["total"]) is int


def test_openapi_has_typed_input_and_output_per_task(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    body = spec["paths"]["/tasks/make_invoice"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/MakeInvoiceArgs")
    assert schemas["MakeInvoiceArgs"]["additionalProperties"] is False
    assert set(schemas["MakeInvoiceArgs"]["required"]) == {"customer", "amounts_cents"}
    result = schemas["MakeInvoiceTask"]["properties"]["result"]
    assert {"$ref": "#/components/schemas/Invoice"} in result["anyOf"]
    assert schemas["AddTask"]["properties"]["result"]["anyOf"][0]["type"] == "integer"
    assert "/tasks/count_primes" in spec["paths"]
    catalogue = {entry["name"]: entry for entry in client.get("/tasks/catalogue").json()}
    assert {"add", "count_primes", "make_invoice"} <= set(catalogue)
    assert catalogue["add"]["result"] == {"type": "integer"}

    def refs(node: object) -> set[str]:
        if isinstance(node, dict):
            return {node["$ref"]} if "$ref" in node else set().union(*map(refs, node.values()))
        return set().union(*map(refs, node)) if isinstance(node, list) else set()

    # The submit routes document their body by reference (they read it by hand): it must resolve.
    assert {ref.rsplit("/", 1)[1] for ref in refs(spec)} <= set(schemas)
    submit = spec["paths"]["/tasks/add"]["post"]
    assert [p["name"] for p in submit["parameters"]] == ["countdown", "eta", "priority", "expires", "Idempotency-Key"]


@pytest.mark.parametrize("name", ["nope", "celery.backend_cleanup", "celery.chord_unlock"])
def test_only_declared_tasks_are_callable(client: httpx.Client, name: str) -> None:
    response = client.post(f"/tasks/{name}", json={})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "unknown_task"


@pytest.mark.parametrize(
    ("body", "params", "hint"),
    [
        ({"x": 1, "y": 2, "task_id": "mine"}, {}, "body field 'task_id': Extra inputs are not permitted"),
        ({"x": 1, "y": 2, "queue": "other"}, {}, "body field 'queue'"),
        ({"x": 1}, {}, "body field 'y': Field required"),
        ({"x": "one", "y": 2}, {}, "body field 'x'"),
        ({"x": 1, "y": 2}, {"priority": 10}, "query parameter 'priority'"),
        ({"x": 1, "y": 2}, {"countdown": -1}, "query parameter 'countdown'"),
        ({"x": 1, "y": 2}, {"countdown": 1, "eta": "2030-01-01T00:00:00Z"}, "countdown or eta"),
        ({"x": 1, "y": 2}, {"eta": "2030-01-01T00:00:00"}, "eta': needs a timezone"),
    ],
)
def test_bad_submissions_are_422(client: httpx.Client, body: dict[str, Any], params: dict[str, Any],
                                 hint: str) -> None:
    response = client.post("/tasks/add", json=body, params=params)
    assert response.status_code == 422, response.text
    assert hint in response.json()["error"]["message"]


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_sent_as_json_submits_nothing(client: httpx.Client, content_type: str | None) -> None:
    """What a browser may send cross-site without a preflight never queues a task."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/tasks/add", content=b'{"x": 1, "y": 2}', headers=headers)
    assert ("content-type" in response.request.headers) == (content_type is not None)
    assert response.status_code == 422, response.text
    assert "Content-Type: application/json" in response.json()["error"]["message"]
    ok = client.post("/tasks/add", content=b'{"x": 1, "y": 2}',
                     headers={"Content-Type": "application/vnd.api+json; charset=utf-8"})
    assert ok.status_code == 202, ok.text


def test_another_sites_page_cannot_make_changes(client: httpx.Client) -> None:
    """With auth off nothing tells a browser's request from the user's own but its Origin: a
    change asked from another site's page is refused before anything is read or done."""
    task_id = submit(client, "add", {"x": 1, "y": 2}, countdown=600)
    for origin in ("http://evil.example", "null"):
        evil = {"Origin": origin}
        for method, path, body in [("POST", "/tasks/add", b'{"x": 1, "y": 2}'),
                                   ("POST", "/tasks/cancel", b'{"task_ids": ["%s"]}' % task_id.encode()),
                                   ("POST", f"/tasks/{task_id}/cancel", b""), ("DELETE", f"/tasks/{task_id}", b"")]:
            refused = client.request(method, path, content=body, headers=evil)  # no Content-Type: no-cors
            assert refused.status_code == 403, (origin, path, refused.text)
            assert "another site" in refused.json()["error"]["message"]
        assert client.get(f"/tasks/{task_id}", headers=evil).status_code == 200, "reads are not changes"
    assert client.get(f"/tasks/{task_id}").json()["state"] == "queued", "nothing was done"
    cross = {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}
    assert client.post(f"/tasks/{task_id}/cancel", headers=cross).status_code == 403
    assert client.post(f"/tasks/{task_id}/cancel", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    host = client.base_url.netloc.decode()
    for same in ({"Origin": f"http://{host.upper()}"}, {"Origin": f"http://{host}:80"} if ":" not in host else {},
                 {"Origin": "https://tasks.example", "X-Forwarded-Host": "tasks.example, inner"},
                 # a proxy that rewrote Host: the browser still says the page was its own
                 {"Origin": "https://tasks.example", "Sec-Fetch-Site": "same-origin"}):
        assert client.post(f"/tasks/{task_id}/cancel", headers=same).status_code in (200, 409), same


def test_bound_from_signature_is_enforced(client: httpx.Client) -> None:
    response = client.post("/tasks/count_primes", json={"limit": 10**11})
    assert response.status_code == 422
    assert "'limit'" in response.json()["error"]["message"]


def test_failure_is_an_envelope_without_traceback(client: httpx.Client) -> None:
    task_id = submit(client, "boom", {"message": "disk on fire"})
    task = wait(client, task_id)
    assert task["state"] == "failed"
    assert task["error"] == {"type": "ValueError", "message": "disk on fire", "retryable": False}
    assert "Traceback" not in client.get(f"/tasks/{task_id}").text


def test_transient_errors_are_retried_with_backoff(client: httpx.Client, tmp_path: Path) -> None:
    task_id = submit(client, "flaky", {"counter": str(tmp_path / "n"), "failures": 2})
    events = sse_events(client, f"/tasks/{task_id}/events")
    states = [event["data"]["state"] for event in events if event["event"] == "state"]  # type: ignore[index]
    assert states[-1] == "succeeded"
    assert states.count("retrying") == 2, states
    retrying = next(e["data"] for e in events if e["data"]["state"] == "retrying")  # type: ignore[index]
    assert retrying["next_attempt_at"] is not None  # type: ignore[index]
    assert retrying["error"]["retryable"] is True  # type: ignore[index]
    task = wait(client, task_id)
    assert task["attempts"] == 3 and task["result"] == 3 and task["next_attempt_at"] is None
    timeline = task["timeline"]
    assert [entry["state"] for entry in timeline] == [
        "queued", "started", "retrying", "started", "retrying", "started", "succeeded"]
    assert [entry["attempt"] for entry in timeline] == [0, 1, 1, 2, 2, 3, 3]
    assert timeline[1]["worker"] == task["worker"] and timeline[0]["at"] == task["created_at"]
    assert (timeline[-2]["at"], timeline[-1]["at"]) == (task["started_at"], task["finished_at"])
    times = [entry["at"] for entry in timeline]
    assert times == sorted(times)


def test_exhausted_retries_fail_as_retryable(client: httpx.Client, tmp_path: Path) -> None:
    task_id = submit(client, "flaky", {"counter": str(tmp_path / "n"), "failures": 99})
    task = wait(client, task_id, 30)
    assert task["state"] == "failed"
    assert task["attempts"] == 4  # the first try and max_retries=3
    assert task["error"]["type"] == "Flaky" and task["error"]["retryable"] is True


def test_unknown_task_id_is_404_everywhere(client: httpx.Client) -> None:
    for method, path in [("GET", "/tasks/nope"), ("POST", "/tasks/nope/cancel"),
                         ("DELETE", "/tasks/nope"), ("GET", "/tasks/nope/events")]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["type"] == "task_not_found"


def test_progress_events_stream_to_the_end_and_resume(client: httpx.Client) -> None:
    task_id = submit(client, "count_primes", {"limit": 300_000_000})
    events = sse_events(client, f"/tasks/{task_id}/events", timeout=60)
    assert events[-1]["event"] == "state"
    final = events[-1]["data"]
    assert final["state"] == "succeeded" and final["result"] == 16_252_325  # type: ignore[index]
    progress = [event["data"] for event in events if event["event"] == "progress"]
    assert progress, events
    assert all(type(data["progress"]["done"]) is int for data in progress), progress  # type: ignore[index]
    ids = [int(str(event["id"])) for event in events]
    assert ids == sorted(ids)
    # Reconnecting with Last-Event-ID replays nothing already seen: only the final state.
    again = sse_events(client, f"/tasks/{task_id}/events", headers={"Last-Event-ID": str(ids[-2])})
    assert [event["id"] for event in again] == [events[-1]["id"]]


def test_progress_keeps_the_number_type_it_was_reported_with(client: httpx.Client) -> None:
    """`report_progress` with ints answers ints (not 2000000.0); floats stay floats, even whole."""
    counted = submit(client, "count_primes", {"limit": 2_000_000})  # reports (high, limit): ints
    slept = submit(client, "sleepy", {"seconds": 1})  # reports (elapsed, 1.0): floats
    for task_id in (counted, slept):
        assert wait(client, task_id)["state"] == "succeeded"
    reads = [client.get(f"/tasks/{counted}").json(),
             client.post("/tasks/results", json={"task_ids": [counted, slept]}).json()["tasks"][0]]
    for task in reads:
        done, total = task["progress"]["done"], task["progress"]["total"]
        assert isinstance(done, int) and isinstance(total, int), task["progress"]
        assert done == total == 2_000_000 and task["progress"]["percent"] == 100.0
    response = client.get(f"/tasks/{slept}")
    progress = response.json()["progress"]
    assert isinstance(progress["done"], float) and isinstance(progress["total"], float), progress
    assert '"total":1.0' in response.text, response.text


def test_wait_returns_early_when_the_task_ends(client: httpx.Client) -> None:
    task_id = submit(client, "sleepy", {"seconds": 0.5})
    task = wait(client, task_id, seconds=20)
    assert task["state"] == "succeeded" and task["result"] == 0.5
    assert type(task["progress"]["total"]) is float, task["progress"]  # floats stay floats
    running = submit(client, "sleepy", {"seconds": 5})
    assert wait(client, running, seconds=0.3)["state"] in ("queued", "started")
    client.post(f"/tasks/{running}/cancel")


def test_cancel_running_task_cooperatively(client: httpx.Client, tmp_path: Path) -> None:
    flag = tmp_path / "started"
    task_id = submit(client, "sleepy", {"seconds": 60, "started_file": str(flag)})
    wait_for(flag.exists, 20, "the task to start")
    response = client.post(f"/tasks/{task_id}/cancel")
    assert response.status_code == 200
    asked = response.json()
    assert asked["state"] == "started"  # asked; the task notices within a moment
    assert asked["cancel_requested_at"] is not None
    task = wait(client, task_id, 10)
    assert task["state"] == "cancelled" and task["finished_at"] is not None
    assert task["cancel_requested_at"] == asked["cancel_requested_at"]
    assert at(task["started_at"]) <= at(task["cancel_requested_at"]) <= at(task["finished_at"])
    conflict = client.post(f"/tasks/{task_id}/cancel")
    assert conflict.status_code == 409
    assert conflict.json()["error"]["type"] == "conflict"


def test_cancel_with_terminate_kills_a_task_that_does_not_check(client: httpx.Client,
                                                               tmp_path: Path) -> None:
    flag = tmp_path / "started"
    task_id = submit(client, "stubborn", {"seconds": 60, "started_file": str(flag)})
    wait_for(flag.exists, 20, "the task to start")
    assert client.post(f"/tasks/{task_id}/cancel", params={"terminate": "true"}).status_code == 200
    task = wait(client, task_id, 15)
    assert task["state"] == "cancelled"
    assert at(task["started_at"]) <= at(task["cancel_requested_at"]) <= at(task["finished_at"])


def test_cancel_lets_a_sync_task_that_never_checks_run_to_its_end_and_says_it_was_asked(
        client: httpx.Client, tmp_path: Path) -> None:
    """Cancel does not interrupt a sync task: one that never checks runs once, to its end, and
    ends in its own state; its record keeps when cancel was asked (README's promise)."""
    log = tmp_path / "runs.log"
    task_id = submit(client, "counted", {"log": str(log), "token": "stubborn", "seconds": 4})
    wait_for(lambda: bool(lines(log)), 20, "the task to start")
    response = client.post(f"/tasks/{task_id}/cancel")
    assert response.status_code == 200, response.text
    asked = response.json()
    assert asked["state"] == "started" and asked["cancel_requested_at"] is not None
    task = wait(client, task_id, 20)
    assert (task["state"], task["result"]) == ("succeeded", "stubborn"), task
    assert task["cancel_requested_at"] == asked["cancel_requested_at"]
    assert at(task["started_at"]) <= at(task["cancel_requested_at"]) <= at(task["finished_at"])
    assert [line.split()[:2] for line in lines(log)] == [["start", "stubborn"], ["end", "stubborn"]], (
        "ran exactly once, to its end")
    assert client.post(f"/tasks/{task_id}/cancel").status_code == 409


def test_a_task_never_asked_to_cancel_says_so(client: httpx.Client) -> None:
    task_id = submit(client, "add", {"x": 1, "y": 2})
    assert wait(client, task_id)["cancel_requested_at"] is None


def at(iso: str) -> dt.datetime:
    """A time from a TaskInfo field."""
    return dt.datetime.fromisoformat(iso)


def test_cancel_of_finished_task_is_409_and_delete_forgets(client: httpx.Client) -> None:
    task_id = submit(client, "add", {"x": 1, "y": 1})
    assert wait(client, task_id)["state"] == "succeeded"
    assert client.post(f"/tasks/{task_id}/cancel").status_code == 409
    assert client.delete(f"/tasks/{task_id}").status_code == 204
    assert client.get(f"/tasks/{task_id}").status_code == 404
    assert client.get(f"/result/{task_id}").status_code == 404


def test_delete_of_running_task_is_409(client: httpx.Client, tmp_path: Path) -> None:
    flag = tmp_path / "started"
    task_id = submit(client, "sleepy", {"seconds": 30, "started_file": str(flag)})
    wait_for(flag.exists, 20, "the task to start")
    assert client.delete(f"/tasks/{task_id}").status_code == 409
    client.post(f"/tasks/{task_id}/cancel")


def test_history_is_newest_first_with_filters_and_cursor(client: httpx.Client) -> None:
    ids = [submit(client, "add", {"x": i, "y": 0}) for i in range(5)]
    for task_id in ids:
        wait(client, task_id)
    page = client.get("/tasks", params={"name": "add", "limit": 3}).json()
    assert [t["task_id"] for t in page["tasks"]] == ids[::-1][:3]
    rest = client.get("/tasks", params={"name": "add", "limit": 2, "cursor": page["next_cursor"]}).json()
    assert [t["task_id"] for t in rest["tasks"]] == ids[::-1][3:5]
    failed = client.get("/tasks", params={"state": "failed", "limit": 100}).json()["tasks"]
    assert all(t["state"] == "failed" for t in failed)
    assert client.get("/tasks", params={"state": "bogus"}).status_code == 422
    created = [dt.datetime.fromisoformat(client.get(f"/tasks/{task_id}").json()["created_at"]) for task_id in ids]
    between = client.get("/tasks", params={"name": "add", "since": created[1].isoformat(),
                                           "until": created[3].isoformat()}).json()["tasks"]
    assert [t["task_id"] for t in between] == [ids[2], ids[1]], "since included, until excluded"
    anonymous = client.get("/tasks", params={"owner": "anonymous", "name": "add", "limit": 5}).json()["tasks"]
    assert [t["task_id"] for t in anonymous] == ids[::-1]
    assert client.get("/tasks", params={"owner": "someone-else"}).json()["tasks"] == []
    naive = client.get("/tasks", params={"since": "2026-12-05T10:00:00"})
    assert naive.status_code == 422 and "timezone" in naive.json()["error"]["message"]
    number = client.get("/tasks", params={"until": "0.5"})
    assert number.status_code == 422 and "ISO 8601" in number.json()["error"]["message"]


def test_idempotency_key(client: httpx.Client) -> None:
    key = {"Idempotency-Key": f"order-{dt.datetime.now().timestamp()}"}
    first = client.post("/tasks/add", json={"x": 1, "y": 2}, headers=key)
    again = client.post("/tasks/add", json={"x": 1, "y": 2}, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    other = client.post("/tasks/add", json={"x": 1, "y": 3}, headers=key)
    assert other.status_code == 409
    assert "different body" in other.json()["error"]["message"]


def test_countdown_delays_the_start(client: httpx.Client) -> None:
    task_id = submit(client, "add", {"x": 2, "y": 2}, countdown=1.5)
    task = wait(client, task_id)
    assert task["state"] == "succeeded"
    delay = dt.datetime.fromisoformat(task["started_at"]) - dt.datetime.fromisoformat(task["created_at"])
    assert delay.total_seconds() >= 1.4


def test_cancelled_while_worker_offline_never_starts(redis_url: str, tmp_path: Path) -> None:
    """Celery's revoke is in-memory; taskgate stores the cancellation, so a worker that comes
    online later still never runs the task."""
    queue = {"TASKGATE_DEFAULT_QUEUE": f"offline-{tmp_path.name}"}
    proc, base = start_api(redis_url, tmp_path / "api.log", **queue)
    flag = tmp_path / "started"
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            task_id = submit(client, "sleepy", {"seconds": 0.1, "started_file": str(flag)})
            marker = submit(client, "add", {"x": 1, "y": 1})
            cancelled = client.post(f"/tasks/{task_id}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            assert cancelled.json()["state"] == "cancelled"
            worker = start_worker(redis_url, tmp_path / "worker.log", **queue)
            try:
                assert wait(client, marker)["state"] == "succeeded"  # the queue was drained
                task = client.get(f"/tasks/{task_id}").json()
                assert task["state"] == "cancelled" and task["started_at"] is None
                assert task["attempts"] == 0
                assert not flag.exists()
            finally:
                stop(worker)
    finally:
        stop(proc)


def test_priority_and_eta_are_honoured(redis_url: str, tmp_path: Path) -> None:
    """With the worker offline, queue low-priority work first, then urgent work: the worker
    that comes online runs the urgent task first. An eta in the past runs at once."""
    queue = {"TASKGATE_DEFAULT_QUEUE": f"prio-{tmp_path.name}"}
    proc, base = start_api(redis_url, tmp_path / "api.log", **queue)
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            low = [submit(client, "add", {"x": i, "y": 0}, priority=9) for i in range(3)]
            urgent = submit(client, "add", {"x": 1, "y": 1}, priority=0)
            past = submit(client, "add", {"x": 5, "y": 5}, eta="2020-01-01T00:00:00Z")
            worker = start_worker(redis_url, tmp_path / "worker.log", **queue)
            try:
                tasks = {task_id: wait(client, task_id) for task_id in [*low, urgent, past]}
            finally:
                stop(worker)
        assert all(task["state"] == "succeeded" for task in tasks.values())
        urgent_start = tasks[urgent]["started_at"]
        assert all(urgent_start < tasks[task_id]["started_at"] for task_id in low)
        assert tasks[past]["result"] == 10
    finally:
        stop(proc)


def test_batch_submit_and_wait_for_many(client: httpx.Client) -> None:
    response = client.post("/tasks/add/batch", json={"items": [{"x": i, "y": i} for i in range(300)]})
    assert response.status_code == 202, response.text
    ids = [item["task_id"] for item in response.json()["tasks"]]
    assert len(set(ids)) == 300 and None not in ids
    results = client.post("/tasks/results", json={"task_ids": [*ids, "nope"], "wait": 20}, timeout=30).json()
    assert [task["result"] for task in results["tasks"][:300]] == [2 * i for i in range(300)]
    assert results["tasks"][300] is None
    too_many = client.post("/tasks/add/batch", json={"items": [{"x": 1, "y": 1}] * 1001})
    assert too_many.status_code == 422


def test_batch_answers_each_invalid_item_in_its_place(client: httpx.Client) -> None:
    """An invalid item does not refuse the batch: the valid ones are queued and run, each invalid
    one gets its field path and message at its index (202); with no valid item, the usual 422."""
    items: list[Any] = [{"x": 1, "y": 1}, {"x": "a", "y": 1}, {"x": 2, "y": 2, "z": 0}, 7, None,
                        {"x": 3, "y": 3}]
    mixed = client.post("/tasks/add/batch", json={"items": items})
    assert mixed.status_code == 202, mixed.text
    outcomes = mixed.json()["tasks"]
    assert len(outcomes) == len(items)
    assert [outcome["task_id"] is not None for outcome in outcomes] == [True, False, False, False, False, True]
    assert all(outcomes[i]["error"] is None for i in (0, 5))
    errors = {i: outcomes[i]["error"] for i in (1, 2, 3, 4)}
    assert all(error["type"] == "invalid_request" and error["retryable"] is False for error in errors.values())
    assert errors[1]["message"].startswith("body field 'items.1.x': Input should be a valid integer"), errors
    assert errors[2]["message"] == "body field 'items.2.z': Extra inputs are not permitted", errors
    assert errors[3]["message"].startswith("body field 'items.3': Input should be a valid dictionary"), errors
    assert errors[4]["message"].startswith("body field 'items.4': Input should be a valid dictionary"), errors
    assert [wait(client, outcomes[i]["task_id"])["result"] for i in (0, 5)] == [2, 6]

    # Nothing valid: nothing queued, and the usual 422 naming every bad field.
    newest = client.get("/tasks", params={"name": "add", "limit": 1}).json()["tasks"]
    bad = client.post("/tasks/add/batch", json={"items": [{"x": "a", "y": 1}, {"y": 1}, 3]})
    assert bad.status_code == 422, bad.text
    assert client.get("/tasks", params={"name": "add", "limit": 1}).json()["tasks"] == newest
    message = bad.json()["error"]["message"]
    assert bad.json()["error"]["type"] == "invalid_request"
    assert all(f"body field '{field}'" in message for field in ("items.0.x", "items.1.x", "items.2")), message
    # A malformed request is refused whole, whatever its items.
    for body in ({"items": {"x": 1, "y": 1}}, {"items": []}, {"items": [{"x": 1, "y": 1}], "more": 1},
                 [{"x": 1, "y": 1}], {"items": [{"x": 1, "y": 1}] * 1001}):
        assert client.post("/tasks/add/batch", json=body).status_code == 422, body

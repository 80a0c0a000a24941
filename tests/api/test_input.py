"""What the API accepts as input: bounded delays, strict JSON types, finite floats, one answer for
malformed JSON; and reads that survive whatever a record holds."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import pytest
import redis
from pydantic import AllowInfNan

from taskgate.records import keys
from taskgate.registry import ResultNotSerializable, RetryPolicy, build_spec

from ..helpers import submit, wait


@pytest.fixture
def valkey_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def refused(response: httpx.Response, *hints: str) -> str:
    """Assert a 422 in the error envelope whose message holds every hint; return the message."""
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request" and error["retryable"] is False, error
    assert all(hint in error["message"] for hint in hints), error["message"]
    message: str = error["message"]
    return message


# -- eta and countdown ---------------------------------------------------------------------------

@pytest.mark.parametrize("eta", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                 "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_an_absurd_eta_is_refused_with_what_to_fix(client: httpx.Client, eta: str) -> None:
    message = refused(client.post("/tasks/add", json={"x": 1, "y": 2}, params={"eta": eta}),
                      "query parameter 'eta'", "30 days from now")
    assert "year" not in message  # says what to fix, not how Python failed


def test_eta_is_at_most_30_days_ahead_and_not_before_1970(client: httpx.Client) -> None:
    now = datetime.now(UTC)
    for eta in (now + timedelta(days=31), datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)):
        refused(client.post("/tasks/add", json={"x": 1, "y": 2}, params={"eta": eta.isoformat()}),
                "query parameter 'eta'", "30 days from now")
    later = submit(client, "add", {"x": 1, "y": 2}, eta=(now + timedelta(days=29)).isoformat())
    assert client.get(f"/tasks/{later}").json()["state"] == "queued"
    assert client.post(f"/tasks/{later}/cancel").json()["state"] == "cancelled"
    # A past eta runs at once, as Celery runs it.
    past = [submit(client, "add", {"x": 1, "y": 2}, eta=eta)
            for eta in ((now - timedelta(hours=1)).isoformat(), "1970-01-01T00:00:00Z")]
    assert [wait(client, task_id)["result"] for task_id in past] == [3, 3]


@pytest.mark.parametrize("countdown", ["nan", "inf", "-inf", "2592001", "1e999", "-1"])
def test_countdown_is_finite_and_bounded(client: httpx.Client, countdown: str) -> None:
    refused(client.post("/tasks/add", json={"x": 1, "y": 2}, params={"countdown": countdown}),
            "query parameter 'countdown'")


def test_a_bad_stored_time_never_breaks_a_read(client: httpx.Client, valkey_client: redis.Redis) -> None:
    """Times out of any datetime's range (year 10000), or not numbers at all, malformed JSON and
    counts: the task still reads, with those fields null or default, alone and in the listing."""
    task_id = submit(client, "add", {"x": 20, "y": 22})
    assert wait(client, task_id)["result"] == 42
    key = keys.record(task_id)
    valkey_client.hset(key, mapping={"finished_at": "253402347599000",  # 10000-01-01T13:59:59Z
                                     "started_at": "soon", "next_attempt_at": "inf",
                                     "created_at": "-99999999999999999",
                                     "progress": "{not json", "attempts": "many"})
    alone = client.get(f"/tasks/{task_id}")
    assert alone.status_code == 200, alone.text
    body = alone.json()
    assert body["result"] == 42 and body["state"] == "succeeded"
    assert [body[name] for name in ("created_at", "started_at", "finished_at", "next_attempt_at",
                                    "progress")] == [None] * 5
    assert body["attempts"] == 0
    listing = client.get("/tasks", params={"name": "add", "limit": 100})
    assert listing.status_code == 200, listing.text
    assert task_id in [task["task_id"] for task in listing.json()["tasks"]]
    results = client.post("/tasks/results", json={"task_ids": [task_id]})
    assert results.status_code == 200 and results.json()["tasks"][0]["result"] == 42
    assert client.get(f"/result/{task_id}").json() == {"status": "completed", "result": 42}
    # A stored error that is not the error envelope is left out too.
    valkey_client.hset(key, "error", '"just a string"')
    assert client.get(f"/tasks/{task_id}").json()["error"] is None


def submit_raw(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else None
    if content is None:
        return client.post(path, json=body)
    return client.post(path, content=content, headers={"content-type": "application/json"})


# -- strict JSON, finite floats ------------------------------------------------------------------

@pytest.mark.parametrize("body", ['{"x": true, "y": 2}', '{"x": "1", "y": 2}', '{"x": 1.0, "y": 2}'])
def test_numbers_are_json_numbers(client: httpx.Client, body: str) -> None:
    refused(submit_raw(client, "/tasks/add", body), "body field 'x'")
    batch = submit_raw(client, "/tasks/add/batch", f'{{"items": [{body}, {{"x": 1, "y": 2}}]}}')
    assert batch.status_code == 202, batch.text
    first, second = batch.json()["tasks"]
    assert first["task_id"] is None and "body field 'items.0.x'" in first["error"]["message"]
    assert second["task_id"] is not None


@pytest.mark.parametrize("wait_for", ["false", "true", '"1"', "NaN"])
def test_results_wait_is_a_number(client: httpx.Client, wait_for: str) -> None:
    refused(submit_raw(client, "/tasks/results", f'{{"task_ids": ["a"], "wait": {wait_for}}}'),
            "body field 'wait'")


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_floats_are_finite(client: httpx.Client, number: str) -> None:
    """sleepy(seconds: float), a test task: NaN and friends used to be queued, then fail."""
    body = f'{{"seconds": {number}}}'
    refused(submit_raw(client, "/tasks/sleepy", body), "body field 'seconds'", "finite number")
    refused(submit_raw(client, "/tasks/sleepy/batch", f'{{"items": [{body}]}}'),
            "body field 'items.0.seconds'", "finite number")


@pytest.mark.parametrize("body", [b'{"items": [', b'"\xff"', b"\xff\xfe\x00", b"", b"nul"])
@pytest.mark.parametrize("path", ["/tasks/add", "/tasks/add/batch", "/tasks/results"])
def test_malformed_json_is_422_everywhere(client: httpx.Client, path: str, body: bytes) -> None:
    refused(submit_raw(client, path, body), "body")


def test_events_document_json_errors_and_allow_names_the_paths_methods(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for status in ("401", "404", "422", "503"):
        content = spec["paths"]["/tasks/{task_id}/events"]["get"]["responses"][status]["content"]
        assert list(content) == ["application/json"], (status, content)
    missing = client.get("/tasks/nope/events")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    for path, allowed in [("/tasks/some-id", "DELETE, GET, HEAD"), ("/tasks/add", "POST"),
                          ("/tasks", "GET, HEAD"), ("/files/" + "0" * 32, "DELETE")]:
        for method in ("OPTIONS", "PUT", "PATCH"):
            response = client.request(method, path)
            assert response.status_code == 405, (method, path)
            assert response.headers["allow"] == allowed, (method, path, response.headers["allow"])


def test_a_task_cannot_declare_an_argument_json_cannot_carry() -> None:
    """NaN and infinities would reach the worker as null: such an argument is refused when the
    task is declared, not at run time."""
    with pytest.raises(TypeError, match="allows NaN or infinities"):
        def inf_ok_probe(value: Annotated[float, AllowInfNan(True)]) -> float:
            return value

        build_spec(inf_ok_probe, "inf_ok_probe", "taskgate.inf_ok_probe", RetryPolicy(), None)


def test_a_non_finite_result_fails_instead_of_reading_as_null() -> None:
    def scaled(value: float) -> dict[str, list[float]]:
        return {"values": [value, value * 1e308 * 10]}

    spec = build_spec(scaled, "scaled_probe", "taskgate.scaled_probe", RetryPolicy(), None)
    assert spec.dump_result({"values": [1.0, 2.0]}) == {"values": [1.0, 2.0]}
    with pytest.raises(ResultNotSerializable, match="returned inf"):
        spec.dump_result(scaled(1.0))


def test_a_result_beyond_64_bits_fails_the_task_instead_of_leaving_it_started(client: httpx.Client) -> None:
    """2**64, which the record cannot store: the task ends failed, saying why (it stayed
    `started` forever, the worker failing to write its end)."""
    task_id = client.post("/tasks/power", json={"base": 2, "exponent": 64}).json()["task_id"]
    body = client.get(f"/tasks/{task_id}", params={"wait": 20}).json()
    assert body["state"] == "failed", body
    assert body["error"]["type"] == "ResultNotSerializable" and "64 bits" in body["error"]["message"], body

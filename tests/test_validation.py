"""One validator: a bad argument or submit option is refused by the library (``InvalidArguments``
with structured ``errors``) and over HTTP (422 with ``error.errors``) alike, naming the same field
with the same message; batch items and schedules follow the same rules."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

import taskgate
from taskgate.exceptions import FieldError
from taskgate.tasks.arithmetic import add

from . import sample_tasks  # noqa: F401  # declared before any app exists (celery warns on a late queue=)
from .helpers import with_gate

LATER = datetime.now(UTC) + timedelta(hours=1)

#: (arguments, options, the field named, the kind of error)
BAD: list[tuple[dict[str, Any], dict[str, Any], str, str]] = [
    ({"x": "1", "y": 2}, {}, "x", "int_type"),  # strict, as JSON: no "1" for an integer
    ({"x": True, "y": 2}, {}, "x", "int_type"),
    ({"x": 1.0, "y": 2}, {}, "x", "int_type"),
    ({"x": 1}, {}, "y", "missing"),
    ({"x": 1, "y": 2}, {"countdown": -1}, "countdown", "countdown_range"),
    ({"x": 1, "y": 2}, {"countdown": 10**9}, "countdown", "countdown_range"),
    ({"x": 1, "y": 2}, {"countdown": 5, "eta": LATER}, "eta", "countdown_and_eta"),
    ({"x": 1, "y": 2}, {"eta": LATER.replace(tzinfo=None)}, "eta", "eta_naive"),
    ({"x": 1, "y": 2}, {"eta": LATER + timedelta(days=31)}, "eta", "eta_range"),
    ({"x": 1, "y": 2}, {"priority": 42}, "priority", "priority_range"),
    ({"x": 1, "y": 2}, {"priority": -1}, "priority", "priority_range"),
    ({"x": 1, "y": 2}, {"idempotency_key": "k" * 201}, "idempotency_key", "string_length"),
]
IDS = [f"{field}-{kind}-{index}" for index, (_, _, field, kind) in enumerate(BAD)]


def library_refusal(redis_url: str, arguments: dict[str, Any], options: dict[str, Any]) -> FieldError:
    """The one error ``await task.with_options(...).submit(...)``, ``tg.submit`` and
    ``tg.submit_sync`` raise (all three must raise the same)."""

    async def body(tg: taskgate.Taskgate) -> list[taskgate.InvalidArguments]:
        refusals = []
        for attempt in ("task.submit", "tg.submit", "tg.submit_sync"):
            try:
                task = add.with_options(**options)
                if attempt == "task.submit":
                    await task.submit(**arguments)
                elif attempt == "tg.submit":
                    await tg.submit(task, **arguments)
                else:  # from blocking code, on a thread of its own
                    await asyncio.to_thread(tg.submit_sync, task, **arguments)
            except taskgate.InvalidArguments as exc:
                refusals.append(exc)
            else:
                pytest.fail(f"{attempt} accepted {arguments} with {options}")
        return refusals

    refusals = with_gate(redis_url, body)
    assert len({str(exc) for exc in refusals}) == 1 or all(exc.errors[0].type == "eta_range"
                                                          for exc in refusals), refusals
    (error,) = refusals[0].errors
    assert str(refusals[0]) == f"{error.loc[0]} {error.field!r}: {error.msg}"
    return error


def http_refusal(client: httpx.Client, arguments: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    params = {name: value.isoformat() if isinstance(value, datetime) else value
              for name, value in options.items() if name != "idempotency_key"}
    headers = {"Idempotency-Key": options["idempotency_key"]} if "idempotency_key" in options else {}
    response = client.post("/tasks/add", json=arguments, params=params, headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request" and error["retryable"] is False, error
    (found,) = error["errors"]
    return {**found, "message": error["message"]}


def same_msg(one: str, other: str, kind: str) -> bool:
    """The same message (an eta's range names "now + 30 days", which may tick between the two)."""
    return one.partition("(")[0] == other.partition("(")[0] if kind == "eta_range" else one == other


@pytest.mark.parametrize(("arguments", "options", "field", "kind"), BAD, ids=IDS)
def test_the_library_and_http_refuse_alike(client: httpx.Client, redis_url: str, arguments: dict[str, Any],
                                           options: dict[str, Any], field: str, kind: str) -> None:
    python = library_refusal(redis_url, arguments, options)
    http = http_refusal(client, arguments, options)
    assert (python.field, python.type) == (field, kind), python
    assert python.loc[0] == ("option" if field in options else "argument"), python
    place = {"idempotency_key": ["header", "Idempotency-Key"]}.get(
        field, ["query", field] if field in options else ["body", field])
    assert (http["loc"], http["type"]) == (place, kind), http
    assert same_msg(http["msg"], python.msg, kind), (http, python)
    where = {"body": "body field", "query": "query parameter", "header": "header"}[place[0]]
    assert same_msg(http["message"], f"{where} {place[1]!r}: {python.msg}", kind), http


@pytest.mark.parametrize(("arguments", "field", "kind"),
                         [(arguments, field, kind) for arguments, options, field, kind in BAD if not options])
def test_batch_items_and_schedules_refuse_arguments_alike(client: httpx.Client, redis_url: str,
                                                          arguments: dict[str, Any], field: str,
                                                          kind: str) -> None:
    python = library_refusal(redis_url, arguments, {})
    batch = client.post("/tasks/add/batch", json={"items": [arguments, {"x": 1, "y": 2}]})
    assert batch.status_code == 202, batch.text
    refused, queued = batch.json()["tasks"]
    assert queued["task_id"] is not None and refused["task_id"] is None
    assert refused["error"]["message"] == f"body field 'items.0.{field}': {python.msg}", refused

    async def scheduled(tg: taskgate.Taskgate) -> taskgate.InvalidArguments:
        with pytest.raises(taskgate.InvalidArguments) as caught:
            await tg.schedules.create("add", arguments, every=3600)
        return caught.value

    in_python = with_gate(redis_url, scheduled, builtins=True)
    over_http = client.post("/schedules", json={"task": "add", "arguments": arguments, "every": 3600})
    assert over_http.status_code == 422, over_http.text
    error = over_http.json()["error"]
    assert error["message"] == str(in_python) == f"argument {field!r}: {python.msg}", (error, in_python)
    assert error["errors"] == [{"loc": ["argument", field], "msg": python.msg, "type": kind}]


def test_options_are_checked_where_they_are_given() -> None:
    """``with_options`` refuses at once (the traceback points at the line), merged with the
    options set before: a countdown then an eta is both."""
    with pytest.raises(taskgate.InvalidArguments, match="option 'eta': give countdown or eta, not both"):
        add.with_options(countdown=5).with_options(eta=LATER)
    with pytest.raises(taskgate.InvalidArguments, match="option 'countdown': Input should be a finite number"):
        add.with_options(countdown=float("nan"))
    assert add.with_options(countdown=0, priority=9).options.priority == 9
    assert add.with_options(eta=datetime(1970, 1, 1, tzinfo=UTC)).options.eta is not None  # runs at once


def test_a_valid_delayed_submission_is_accepted_both_ways(client: httpx.Client, redis_url: str) -> None:
    async def body(tg: taskgate.Taskgate) -> str:
        job = await add.with_options(countdown=3600, priority=5, idempotency_key="v-1").submit(x=1, y=2)
        state = (await job.status()).state
        await job.cancel()  # leave nothing delayed behind
        return str(state)

    assert with_gate(redis_url, body) == "queued"
    response = client.post("/tasks/add", json={"x": 1, "y": 2}, params={"countdown": "3600", "priority": "5"})
    assert response.status_code == 202, response.text
    assert client.post(f"/tasks/{response.json()['task_id']}/cancel").json()["state"] == "cancelled"

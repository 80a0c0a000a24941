"""``GET /events``: the caller's tasks as they change, from a real API and worker. A submitted
task appears and its state follows; many changes come coalesced in few batches; another owner's
tasks never appear, also with 200 feeds of several owners open at once; a batch's frame is byte
for byte what FastAPI's own SSE encoding wrote before frames were made once for every feed; a
closed feed frees its slot; the OpenAPI entry, declared by hand, says what the route answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.encoders import jsonable_encoder
from fastapi.sse import format_sse_event

from taskgate.api.routes.live import task_changes, task_json, tasks_frame
from taskgate.api.schemas import TaskInfo
from taskgate.producer.feed import FeedEntry
from taskgate.records import TaskRecord
from taskgate.states import TaskState

from ..helpers import start_api, stop, wait_for
from .test_auth import bearer, new_key


@contextmanager
def feed(base: str, path: str = "/events", headers: dict[str, str] | None = None) -> Iterator[list[tuple[float, list[dict[str, Any]]]]]:
    """Read the stream on a thread; yields the batches read so far (time, tasks), once live."""
    batches: list[tuple[float, list[dict[str, Any]]]] = []
    stop = threading.Event()

    http = httpx.Client(base_url=base, timeout=60)

    def read() -> None:
        try:
            with http.stream("GET", path, headers=headers) as answer:
                assert answer.status_code == 200
                for line in answer.iter_lines():
                    if line.startswith("data:"):
                        batches.append((time.monotonic(), json.loads(line[5:])))
        except (httpx.HTTPError, RuntimeError):
            if not stop.is_set():  # closed by the test, or it is a failure
                raise

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: bool(batches), 20, "the feed to be live (its first, empty batch)")
        yield batches
    finally:
        stop.set()
        http.close()  # ends the stream: the reader returns
        reader.join(10)


def seen(batches: list[tuple[float, list[dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for _, tasks in list(batches):
        for task in tasks:
            latest[task["task_id"]] = task
    return latest


def test_a_submitted_task_appears_and_follows_its_state(api_url: str, worker: subprocess.Popen[bytes]) -> None:
    with feed(api_url) as batches, httpx.Client(base_url=api_url, timeout=10) as http:
        task_id = http.post("/tasks/sleepy", json={"seconds": 1.5}).json()["task_id"]
        # it runs 1.5 s: the feed shows it running before it shows it done
        wait_for(lambda: seen(batches).get(task_id, {}).get("state") == "started", 20, "the task to show started")
        wait_for(lambda: seen(batches).get(task_id, {}).get("state") == "succeeded", 20, "the task to succeed")
        task = seen(batches)[task_id]
        assert task["result"] == 1.5 and task["arguments"] == {"seconds": 1.5, "started_file": ""}


def test_many_changes_come_coalesced_in_few_batches(api_url: str, worker: subprocess.Popen[bytes]) -> None:
    with feed(api_url, "/events?name=add") as batches, httpx.Client(base_url=api_url, timeout=30) as http:
        began = time.monotonic()
        made = http.post("/tasks/add/batch", json={"items": [{"x": i, "y": 1} for i in range(300)]}).json()
        ids = {item["task_id"] for item in made["tasks"]}
        wait_for(lambda: all(seen(batches).get(task_id, {}).get("state") == "succeeded" for task_id in ids), 60,
                 "every task of the batch to show succeeded")
        took = time.monotonic() - began
        during = [at for at, tasks in batches if at >= began and tasks]
        # 300 tasks make 900 changes (queued, started, succeeded): at most 4 batches a second
        # counted where they arrive (a gap between two arrivals also holds the client's jitter)
        assert len(during) <= 4 * took + 2, (len(during), took)


def test_other_owners_tasks_never_appear(secured: str, redis_url: str, worker: subprocess.Popen[bytes]) -> None:
    alice, bob = new_key(redis_url, "alice-live"), new_key(redis_url, "bob-live")
    with feed(secured, headers=bearer(alice)) as batches, httpx.Client(base_url=secured, timeout=10) as http:
        bobs = http.post("/tasks/add", json={"x": 1, "y": 1}, headers=bearer(bob)).json()["task_id"]
        alices = http.post("/tasks/add", json={"x": 2, "y": 2}, headers=bearer(alice)).json()["task_id"]
        wait_for(lambda: seen(batches).get(alices, {}).get("state") == "succeeded", 20, "alice's task")
        wait_for(lambda: http.get(f"/tasks/{bobs}", headers=bearer(bob)).json()["state"] == "succeeded", 20,
                 "bob's task")
        assert bobs not in seen(batches)
        assert {task["owner"] for task in seen(batches).values()} == {"alice-live"}
    assert httpx.get(secured + "/events", timeout=5).status_code == 401


@contextmanager
def many_feeds(base: str, feeds: list[tuple[str, dict[str, str]]]) -> Iterator[list[dict[str, dict[str, Any]]]]:
    """Read every ``(path, headers)`` stream at once, each on its own connection (raw HTTP/1.0, one
    thread's event loop); yields, per feed, the latest of each task it has shown, once all are live."""
    host, port = base.removeprefix("http://").split(":")
    seen: list[dict[str, dict[str, Any]]] = [{} for _ in feeds]
    live = [False] * len(feeds)
    failures: list[Exception] = []
    loop = asyncio.new_event_loop()

    async def read(index: int, path: str, headers: dict[str, str]) -> None:
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 24)
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n{lines}\r\n".encode())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            assert b" 200 " in head.split(b"\r\n", 1)[0], head
            assert b"transfer-encoding: chunked" in head.lower(), head
            buffer = b""
            while size := int(await reader.readuntil(b"\r\n"), 16):
                *frames, buffer = (buffer + (await reader.readexactly(size + 2))[:-2]).split(b"\n\n")
                for frame in frames:
                    if frame.startswith(b":"):  # a keep-alive comment
                        continue
                    event = b"event: tasks\ndata: "  # what the dashboard's EventSource reads
                    assert frame.startswith(event) and frame.count(b"\n") == 1, frame[:200]
                    for task in json.loads(frame[len(event):]):
                        seen[index][task["task_id"]] = task
                    live[index] = True
        except (asyncio.CancelledError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # reported by the waiting test
            failures.append(exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    stop = asyncio.Event()

    async def main() -> None:
        readers = [asyncio.create_task(read(index, path, headers)) for index, (path, headers) in enumerate(feeds)]
        await stop.wait()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers)

    runner = asyncio.run_coroutine_threadsafe(main(), loop)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def ready() -> bool:
        assert not failures, failures[:3]
        return all(live)

    try:
        wait_for(ready, 60, f"the {len(feeds)} feeds to be live (their first, empty batch)")
        yield seen
        assert not failures, failures[:3]
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_200_feeds_each_show_every_task_they_may_see_and_no_other(
        secured: str, redis_url: str, worker: subprocess.Popen[bytes]) -> None:
    tag = uuid.uuid4().hex[:6]
    owners = [f"o{number}-{tag}" for number in range(4)]
    keys = {owner: new_key(redis_url, owner) for owner in owners}
    admin = new_key(redis_url, f"ops-{tag}", admin=True)
    # per owner 40 feeds of every task, 5 of its add tasks, 5 of its failed tasks (it has none);
    # and 20 admin feeds of every task
    feeds = [(owner, path) for owner in owners for path in
             ["/events"] * 40 + ["/events?name=add"] * 5 + ["/events?state=failed"] * 5]
    feeds += [("admin", "/events")] * 20
    headers = {**{owner: bearer(key) for owner, key in keys.items()}, "admin": bearer(admin)}
    with many_feeds(secured, [(path, headers[owner]) for owner, path in feeds]) as seen, \
            httpx.Client(base_url=secured, timeout=30) as http:
        tasks: dict[str, str] = {}  # task id -> owner
        sleepy: set[str] = set()  # not add: not shown by the name=add feeds
        for owner in owners:
            made = http.post("/tasks/add/batch", json={"items": [{"x": i, "y": 1} for i in range(20)]},
                             headers=headers[owner]).json()
            tasks.update((item["task_id"], owner) for item in made["tasks"])
            slept = http.post("/tasks/sleepy", json={"seconds": 0}, headers=headers[owner]).json()["task_id"]
            tasks[slept] = owner
            sleepy.add(slept)

        def expected(owner: str, path: str) -> set[str]:
            if path.endswith("state=failed"):
                return set()
            return {task_id for task_id, of in tasks.items() if owner in ("admin", of)
                    and not (path.endswith("name=add") and task_id in sleepy)}

        def finished() -> bool:
            answer = http.post("/tasks/results", json={"task_ids": list(tasks), "wait": 5}, headers=headers["admin"])
            return all(task and task["state"] == "succeeded" for task in answer.json()["tasks"])

        wait_for(finished, 60, "every task to succeed")

        def complete() -> bool:  # every feed shows each task it may see with its final state
            return all(all(seen[index].get(task_id, {}).get("state") == "succeeded"
                           for task_id in expected(owner, path)) for index, (owner, path) in enumerate(feeds))

        wait_for(complete, 60, "every feed to show each of its tasks succeeded")
        for index, (owner, path) in enumerate(feeds):
            shown = set(seen[index])
            if owner == "admin":  # every owner's: ours and the session's other tests'
                assert expected(owner, path) <= shown
                continue
            assert shown & set(tasks) == expected(owner, path), (owner, path)
            assert {task["owner"] for task in seen[index].values()} <= {owner}, (owner, path)
            assert all(task["name"] == "add" for task in seen[index].values()) or not path.endswith("name=add")


def test_a_batch_is_the_frame_fastapi_wrote_for_the_tasks() -> None:
    """Each change's JSON is made once and a frame once per view: the frame is still byte for byte
    what FastAPI's SSE encoding wrote for the list of tasks (``json.dumps`` of their JSON form)."""
    at = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    records = [
        TaskRecord(task_id="a", name="add", state=TaskState.SUCCEEDED, owner="ann", created_at=at,
                   started_at=at, finished_at=at, attempts=1, seq=3, args={"x": 1, "y": 2}, result=3),
        TaskRecord(task_id="b", name="mail", state=TaskState.FAILED, owner="bø", created_at=at, seq=2,
                   args={"to": "zoë@example.com", "body": "line\n\"quoted\" \u2603\r\u2028"},
                   error={"type": "ValueError", "message": "bad\tvalue é"}, progress={"done": 0.5}),
        TaskRecord(task_id="c", state=None, owner="ann", result=float("nan")),
    ]
    tasks = [TaskInfo.from_record(record).model_dump(mode="json", exclude={"timeline"}) for record in records]
    fastapi_wrote = format_sse_event(event="tasks", data_str=json.dumps(jsonable_encoder(tasks)))
    assert tasks_frame([FeedEntry(record) for record in records]) == fastapi_wrote
    assert "[" + ", ".join(task_json(record) for record in records) + "]" == \
        fastapi_wrote.decode().removeprefix("event: tasks\ndata: ").removesuffix("\n\n")
    assert tasks_frame([]) == format_sse_event(event="tasks", data_str=json.dumps(jsonable_encoder([])))


def open_feed(base: str, headers: dict[str, str] | None = None) -> tuple[httpx.Client, httpx.Response]:
    """A feed's answer, its body not read yet (a 200 is an open feed until its client closes)."""
    http = httpx.Client(base_url=base, timeout=20, headers=headers)
    answer = http.send(http.build_request("GET", "/events"), stream=True)
    return http, answer


def refused(answer: httpx.Response, status: int, setting: str) -> None:
    answer.read()
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert setting in error["message"] and error["retryable"] is True and "retry-after" in answer.headers


@pytest.mark.timeout(120)
def test_feeds_refused_before_the_stream_and_a_closed_feed_frees_its_slot(redis_url: str, tmp_path: Any) -> None:
    """At most TASKGATE_MAX_STREAMS feeds per process (503), an owner its share (429), in the JSON
    envelope before any event; a client that closes its feed gives its slot back."""
    api, base = start_api(redis_url, tmp_path / "api.log", TASKGATE_AUTH="on", TASKGATE_MAX_STREAMS="3",
                          TASKGATE_MAX_STREAMS_PER_OWNER="1")
    tag = uuid.uuid4().hex[:6]
    ann, bob, cid, dan = (bearer(new_key(redis_url, f"{name}-{tag}")) for name in ("ann", "bob", "cid", "dan"))
    opened: list[httpx.Client] = []
    reading = []  # (an iterator closed by the garbage collector would close its feed)
    try:
        for headers in (ann, bob, cid):
            http, answer = open_feed(base, headers)
            opened.append(http)
            assert answer.status_code == 200
            assert answer.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert answer.headers["cache-control"] == "no-cache" and answer.headers["x-accel-buffering"] == "no"
            reading.append(answer.iter_bytes())
            assert next(reading[-1]) == b"event: tasks\ndata: []\n\n"  # live
        http, answer = open_feed(base, ann)
        refused(answer, 429, "TASKGATE_MAX_STREAMS_PER_OWNER")
        http.close()
        http, answer = open_feed(base, dan)
        refused(answer, 503, "TASKGATE_MAX_STREAMS")
        http.close()
        assert httpx.get(base + "/events", timeout=5).status_code == 401
        opened.pop(0).close()  # ann's feed: its connection closes, the API sees it and frees the slot

        def reopened() -> bool:
            http, answer = open_feed(base, ann)
            if answer.status_code == 200:
                opened.append(http)
                return True
            refused(answer, 429, "TASKGATE_MAX_STREAMS_PER_OWNER")
            http.close()
            return False

        wait_for(reopened, 10, "ann's closed feed to free its slot")
        opened.pop(0).close()  # bob's: dan gets a place

        def placed() -> bool:
            http, answer = open_feed(base, dan)
            opened.append(http)
            return answer.status_code == 200

        wait_for(placed, 10, "bob's closed feed to free a slot")
    finally:
        for http in opened:
            http.close()
        stop(api)


def test_the_openapi_entry_says_what_the_route_answers(in_process_api: httpx.Client) -> None:
    """Declared by hand (the route returns its frames itself): the SSE answer, the docstring, the
    parameters, and the errors before the stream begins in the JSON envelope."""
    entry = in_process_api.get("/openapi.json").json()["paths"]["/events"]["get"]
    assert entry["operationId"] == "task_changes_events_get"
    assert entry["description"].split() == (task_changes.__doc__ or "").split()
    assert [(parameter["name"], parameter["in"]) for parameter in entry["parameters"]] == [
        ("state", "query"), ("name", "query")]
    stream = entry["responses"]["200"]["content"]["text/event-stream"]
    assert stream["itemSchema"]["properties"]["data"] == {"type": "string"}
    assert stream["itemSchema"]["properties"]["event"] == {"type": "string"}
    assert set(entry["responses"]) == {"200", "401", "422", "429", "503"}
    for code in ("401", "422", "429", "503"):
        assert entry["responses"][code]["content"] == {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}

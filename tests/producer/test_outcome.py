"""A submit's 503 tells the truth about its task: "will never run" only when that is known,
"unknown" when its script reached Redis and the answer did not come in time. A small TCP proxy
between the API and the session's Valkey passes the submit script on and holds Redis's reply
past the deadline, as a stalled server's output buffer or a network does; the session's worker
(straight on the Valkey) then runs the task the 503 could not vouch for."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from redis import Redis

from taskgate.records import keys

from ..api.test_app import api
from ..helpers import free_port

#: The API's deadline in these tests (TASKGATE_BACKEND_TIMEOUT).
DEADLINE = 0.5


class Proxy:
    """Forwards TCP between its clients and ``upstream``; while :attr:`holding`, what upstream
    answers is kept back (the requests still pass on), until :meth:`release`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.holding = False
        self.held = 0  # bytes of replies kept back
        self.delay = 0.0  # seconds each request waits before it is passed on
        self._released = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if replies and self.holding:
                    self.held += len(data)
                    await self._released.wait()
                if not replies and self.delay:
                    await asyncio.sleep(self.delay)  # the proxy's job: a slow network, not a wait in the test
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        for task in (asyncio.create_task(self._pipe(client_reader, upstream_writer, replies=False)),
                     asyncio.create_task(self._pipe(upstream_reader, client_writer, replies=True))):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def release(self) -> None:
        self.holding = False
        self._released.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        port = free_port()
        server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        try:
            yield port
        finally:
            self.release()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await server.wait_closed()


def _record_state(redis_url: str, task_id: str) -> bytes | None:
    client = Redis.from_url(redis_url)
    try:
        state: bytes | None = client.hget(keys.record(task_id), "state")  # type: ignore[assignment]
        return state
    finally:
        client.close()


def test_a_submit_whose_reply_is_held_past_the_deadline_says_its_outcome_is_unknown(
        redis_url: str, worker: object) -> None:
    parts = urlsplit(redis_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 6379))

    async def main() -> str:
        async with proxy.running() as port, api(f"redis://127.0.0.1:{port}{parts.path}",
                                                 backend_timeout=DEADLINE) as client:
            warm = await client.get("/add", params={"x": 1, "y": 1})  # scripts loaded, clock read
            assert warm.status_code == 200, warm.text
            proxy.holding = True
            started = time.monotonic()
            answer = await client.get("/add", params={"x": 20, "y": 22})
            assert time.monotonic() - started < DEADLINE + 1, "answered at its deadline"
            assert proxy.held, "Redis answered: the script had reached it"
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["type"] == "backend_unavailable" and error["outcome"] == "unknown", error
            task_id: str = error["task_id"]
            assert f"the outcome of task {task_id} is unknown" in error["message"], error
            assert f"GET /tasks/{task_id}" in error["message"] and "Idempotency-Key" in error["message"]
            assert "will never run" not in error["message"]
            proxy.release()
            body = (await client.get(f"/tasks/{task_id}", params={"wait": 20})).json()
            assert body["state"] == "succeeded" and body["result"] == 42, body
            return task_id

    task_id = asyncio.run(main())
    assert _record_state(redis_url, task_id) == b"succeeded", "the task the 503 could not vouch for ran"


def test_a_submit_refused_before_sending_says_it_was_not_queued(worker: object) -> None:
    async def main() -> None:
        port = free_port()  # nothing listens: every connection is refused
        async with api(f"redis://127.0.0.1:{port}/0", backend_timeout=DEADLINE) as client:
            refused = await client.get("/add", params={"x": 1, "y": 1})
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["outcome"] == "not_queued", error
            assert f"task {error['task_id']} was not queued and will never run" in error["message"]

    asyncio.run(main())


def test_the_pipeline_tells_a_call_never_sent_from_one_sent_and_unanswered(redis_url: str) -> None:
    """The layer below: a connection refused fails the call as a plain connection error; a
    reply held past the deadline as ``OutcomeUnknown``, and the script did run."""
    from redis.asyncio import Redis as AsyncRedis
    from redis.exceptions import ConnectionError as RedisConnectionError

    from taskgate.producer.autopipeline import OutcomeUnknown, ScriptPipeline

    source = "redis.call('INCR', KEYS[1]); return 'ran'"
    counter = f"outcome-test-{time.time_ns()}"
    parts = urlsplit(redis_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 6379))

    async def main() -> None:
        nowhere = AsyncRedis.from_url(f"redis://127.0.0.1:{free_port()}/0")
        try:
            call = ScriptPipeline(nowhere, source, DEADLINE)([counter], [])
            failed = await asyncio.gather(call, return_exceptions=True)
            assert isinstance(failed[0], RedisConnectionError) and not isinstance(failed[0], OutcomeUnknown)
        finally:
            await nowhere.aclose()
        async with proxy.running() as port:
            client = AsyncRedis.from_url(f"redis://127.0.0.1:{port}{parts.path}")
            try:
                await client.script_load(source)
                pipeline = ScriptPipeline(client, source, DEADLINE)
                assert await pipeline([counter], []) == b"ran"
                proxy.holding = True
                held = await asyncio.gather(pipeline([counter], []), return_exceptions=True)
                assert isinstance(held[0], OutcomeUnknown), held
            finally:
                proxy.release()
                await client.aclose()

    asyncio.run(main())
    direct = Redis.from_url(redis_url)
    try:
        assert direct.get(counter) == b"2", "the unanswered call ran"
    finally:
        direct.delete(counter)
        direct.close()


def test_a_batch_whose_script_reached_redis_past_its_deadline_is_backend_unavailable(
        redis_url: str, worker: object) -> None:
    """Requests delayed on their way so the submit script reaches Redis after its deadline (0.25
    s before the API's) and its reply still comes back in time: the script refuses (``late``); a
    single submit is a 503 ``not_queued``, a batch's items are ``backend_unavailable`` (not
    ``quota_exceeded``), and nothing was queued."""
    parts = urlsplit(redis_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    deadline = 2.0

    async def main() -> None:
        async with proxy.running() as port, api(f"redis://127.0.0.1:{port}{parts.path}",
                                                 backend_timeout=deadline) as client:
            warm = await client.get("/add", params={"x": 1, "y": 1})  # scripts loaded, clock read
            assert warm.status_code == 200, warm.text
            proxy.delay = deadline - 0.125  # past the script's deadline, inside the API's
            batch = await client.post("/tasks/add/batch", json={"items": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]})
            single = await client.get("/add", params={"x": 5, "y": 6})
            proxy.delay = 0
            assert batch.status_code == 202, batch.text
            for item in batch.json()["tasks"]:
                assert item["task_id"] is None and item["error"]["type"] == "backend_unavailable", item
                assert item["error"]["retryable"] is True and "will never run" in item["error"]["message"]
            assert single.status_code == 503, single.text
            error = single.json()["error"]
            assert error["outcome"] == "not_queued" and "after the deadline" in error["message"], error
            assert (await client.get(f"/tasks/{error['task_id']}")).status_code == 404

    asyncio.run(main())

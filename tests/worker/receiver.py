"""A local webhook receiver for the sender's tests: a real HTTP server (``http.server``) on a free
loopback port, in a thread, recording every request and answering each path as the test plans,
and the deliveries and subscriptions those tests write into Redis by hand (as the design's
``webhooks.lua`` writes them)."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from redis import Redis

from taskgate.records import keys, webhooks

#: An answer that never comes: the handler holds the request until the test ends.
HANG = 0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """Answers ``POST <path>`` with the statuses planned for that path, in order (the last one
    repeats; :data:`HANG` holds the request open); 200 for a path with no plan."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.plans: dict[str, list[int]] = {}
        self.lock = threading.Lock()
        self.done = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                try:
                    body = self.rfile.read(int(self.headers.get("content-length") or 0))
                    with receiver.lock:
                        plan = receiver.plans.get(self.path, [200])
                        status = plan.pop(0) if len(plan) > 1 else plan[0]
                        receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                          body, time.time()))
                    if status == HANG:
                        receiver.done.wait(60)
                        status = 200
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the sender gave up on it (a timeout) or died
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def plan(self, path: str, *statuses: int) -> str:
        """Answer ``path`` with ``statuses`` in order; its URL."""
        with self.lock:
            self.plans[path] = list(statuses)
        return self.url(path)

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [request for request in self.received if request.path == path]

    def close(self) -> None:
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    try:
        yield receiver
    finally:
        receiver.close()


def subscribe(redis: Redis, url: str, *, secret: str | None = None, previous: str | None = None,
              previous_until: float | None = None) -> tuple[str, str]:
    """A subscription's hash as the API stores it (not in the owner sets: no run's end writes it
    deliveries; the tests write them): (its id, its secret)."""
    webhook_id, secret = webhooks.new_id(), secret or webhooks.new_secret()
    subscription = webhooks.Subscription(webhook_id, url, ("task.*",), secret=secret,
                                         created_at=datetime.now(UTC))
    fields: dict[str, str | int] = dict(webhooks.fields_of(subscription))
    if previous is not None and previous_until is not None:
        fields |= {"previous_secret": previous, "previous_until": round(previous_until * 1000)}
    redis.hset(keys.webhook(webhook_id), mapping=fields)
    return webhook_id, secret


def ended_record(task_id: str, state: str = "succeeded") -> dict[str, str]:
    """A run's record as the end script publishes it (stored forms), for a delivery's payload."""
    now = round(time.time() * 1000)
    return {"name": "add", "state": state, "created_at": str(now - 20), "started_at": str(now - 10),
            "finished_at": str(now), "attempts": "1", "seq": "3", "result": "3", "args": '{"x": 1, "y": 2}',
            "worker": "celery@test"}


def deliver(redis: Redis, webhook_id: str, task_id: str | None = None, record: dict[str, str] | None = None,
            ) -> tuple[str, str]:
    """A run's end delivery for ``webhook_id``, due now, as ``webhooks.lua`` writes it: (its key,
    its msg id)."""
    task_id = task_id or uuid.uuid4().hex
    record = record or ended_record(task_id)
    msg_id = webhooks.task_msg_id(task_id, record["state"])
    key = keys.delivery(webhooks.delivery_id(webhook_id, msg_id))
    now = int(time.time() * 1000)  # whole ms rounded down, as the scripts read Redis's clock: due now
    redis.hset(key, mapping={"webhook": webhook_id, "msg_id": msg_id, "type": f"task.{record['state']}",
                             "payload": orjson.dumps(record), "attempts": 0, "state": "pending",
                             "next_at": now, "created_at": now})
    redis.zadd(keys.WEBHOOK_DUE, {key: now})
    return key, msg_id


def fields(redis: Redis, key: str) -> dict[str, str]:
    """A hash's fields as text."""
    return {k.decode(): v.decode() for k, v in redis.hgetall(key).items()}

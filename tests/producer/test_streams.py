"""Many waits and event streams on one API process: one Redis connection carries them all, and
the per-owner and per-process limits refuse the surplus without failing anyone else's wait.

A private Valkey for the module (so ``CLIENT LIST`` shows only this module's processes), a real
worker on it, and real API subprocesses with auth on and two or three owners.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from taskgate import auth
from taskgate.producer.subscriptions import CLIENT_NAME

from ..helpers import start_api, start_valkey, start_worker, stop, submit, wait_for

#: Streams held open at once in the scale test.
STREAMS = 500

pytestmark = pytest.mark.timeout(60)


@dataclass
class Setup:
    redis_url: str
    redis: redis.Redis
    tmp: Path

    def key(self, owner: str) -> dict[str, str]:
        """The headers of a new API key of ``owner``."""
        return {"Authorization": f"Bearer {auth.create(self.redis, owner)[1]}"}

    @contextmanager
    def clients(self, base: str, *owners: str) -> Iterator[list[httpx.Client]]:
        """An HTTP client of ``base`` per owner, each with a key of its owner."""
        with ExitStack() as stack:
            yield [stack.enter_context(httpx.Client(base_url=base, headers=self.key(owner), timeout=30))
                   for owner in owners]

    def events_connections(self) -> list[dict[str, Any]]:
        """The API processes' shared pub/sub connections."""
        return [client for client in self.redis.client_list() if client["name"] == CLIENT_NAME]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A private Valkey and a worker on it."""
    tmp = tmp_path_factory.mktemp("streams")
    server = start_valkey(tmp / "valkey")
    url = f"{server.connection_url}/0"
    client = redis.Redis.from_url(url, decode_responses=True)
    worker = start_worker(url, tmp / "worker.log")
    try:
        yield Setup(url, client, tmp)
    finally:
        stop(worker)
        client.close()
        server.stop()


@pytest.fixture(scope="module")
def small(setup: Setup) -> Iterator[str]:
    """An API that serves at most 3 waits, 2 per owner."""
    proc, base = start_api(setup.redis_url, setup.tmp / "small-api.log", TASKGATE_AUTH="on",
                           TASKGATE_MAX_STREAMS="3", TASKGATE_MAX_STREAMS_PER_OWNER="2")
    yield base
    stop(proc)


@contextmanager
def streams(http: httpx.Client, task_ids: list[str]) -> Iterator[list[socket.socket]]:
    """``GET /tasks/{id}/events`` with ``http``'s key for each id, each on a raw socket (light
    enough for hundreds), held open inside the block; entered once every stream answered 200
    and sent its first event (its subscription is on)."""
    host, port = http.base_url.host, http.base_url.port
    with ExitStack() as stack:
        sockets = []
        for task_id in task_ids:  # every request first, so the API works on them together
            sock = stack.enter_context(socket.create_connection((host, port), timeout=30))
            sock.sendall(f"GET /tasks/{task_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
                         f"Authorization: {http.headers['authorization']}\r\n"
                         "Accept: text/event-stream\r\n\r\n".encode())
            sockets.append(sock)
        for sock in sockets:
            head = read_until(sock, lambda got: b"\r\n\r\n" in got)
            assert head.startswith(b"HTTP/1.1 200"), head
            got = read_until(sock, lambda got: b"\n\n" in got.partition(b"\r\n\r\n")[2], head)
            assert b"event: state" in got, got
        yield sockets


def read_until(sock: socket.socket, done: Callable[[bytes], bool], seen: bytes = b"") -> bytes:
    """``seen`` and what ``sock`` sends after it until ``done`` says it is enough (the socket's
    timeout bounds each read)."""
    while not done(seen):
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    return seen


def delayed(http: httpx.Client, count: int) -> list[str]:
    """``count`` tasks that stay queued for the whole test (a countdown of 10 minutes)."""
    return [submit(http, "add", {"x": 1, "y": index}, countdown=600) for index in range(count)]


def test_many_streams_share_one_connection_and_others_still_wait(setup: Setup) -> None:
    proc, base = start_api(setup.redis_url, setup.tmp / "api.log", TASKGATE_AUTH="on")
    try:
        with setup.clients(base, "alice", "bob") as (alice, bob):
            task_ids = delayed(alice, STREAMS)
            started = time.monotonic()
            with streams(alice, task_ids) as held:
                opened = time.monotonic() - started
                rss = next(line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                           if line.startswith("VmRSS"))
                # All of them on one connection; with the worker's (and its webhook deliverer's
                # wake-up channel), a handful of pub/sub clients.
                [events] = setup.events_connections()
                assert int(events["sub"]) == STREAMS
                pubsub = [client for client in setup.redis.client_list() if "P" in client["flags"]]
                assert len(pubsub) <= 4, pubsub
                # Another owner's wait is held, and answered when its task ends.
                task_id = submit(bob, "sleepy", {"seconds": 1})
                response = bob.get(f"/tasks/{task_id}", params={"wait": 20})
                assert response.status_code == 200, response.text
                assert response.json()["state"] == "succeeded"
                # One of the 500 streams gets its own task's end, and ends.
                assert alice.post(f"/tasks/{task_ids[0]}/cancel").status_code == 200
                rest = read_until(held[0], lambda seen: seen.endswith(b"0\r\n\r\n"))
                assert b"event: state" in rest and b'"state": "cancelled"' in rest, rest
            print(f"{STREAMS} streams opened in {opened:.2f}s; API {rss}")
        # Closed streams leave: their channels are unsubscribed, the connection stays.
        wait_for(lambda: [int(c["sub"]) for c in setup.events_connections()] == [0], 30,
                 "the streams' channels to be unsubscribed")
    finally:
        stop(proc)


def refused(response: httpx.Response, status: int, setting: str) -> None:
    """``response`` is the retryable ``status`` naming ``setting``, in the error envelope."""
    assert response.status_code == status, response.text
    assert response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["retryable"] is True
    assert error["type"] == {429: "quota_exceeded", 503: "backend_unavailable"}[status]
    assert f"({setting})" in error["message"], error


def test_an_owner_over_its_share_gets_429_and_others_still_wait(setup: Setup, small: str) -> None:
    with setup.clients(small, "alice2", "bob2") as (alice, bob):
        mine = delayed(alice, 3)
        with streams(alice, mine[:2]):
            refused(alice.get(f"/tasks/{mine[2]}/events"), 429, "TASKGATE_MAX_STREAMS_PER_OWNER")
            refused(alice.get(f"/tasks/{mine[2]}", params={"wait": 1}), 429, "TASKGATE_MAX_STREAMS_PER_OWNER")
            refused(alice.post("/tasks/results", json={"task_ids": mine, "wait": 1}), 429,
                    "TASKGATE_MAX_STREAMS_PER_OWNER")
            assert alice.get(f"/tasks/{mine[2]}").status_code == 200  # reads without a wait are not counted
            # Bob's wait is held, and answered when his task ends.
            task_id = submit(bob, "sleepy", {"seconds": 0.5})
            response = bob.get(f"/tasks/{task_id}", params={"wait": 20})
            assert response.status_code == 200, response.text
            assert response.json()["state"] == "succeeded"
        # Her streams closed (the API notices the disconnects), alice may wait again.
        wait_for(lambda: alice.get(f"/tasks/{mine[2]}", params={"wait": 0.01}).status_code == 200, 30,
                 "alice's streams to be released")


def test_a_full_process_answers_503_naming_the_limit(setup: Setup, small: str) -> None:
    with setup.clients(small, "alice3", "bob3", "carol3") as (alice, bob, carol):
        mine, theirs, waiting = delayed(alice, 2), delayed(bob, 1), delayed(carol, 1)[0]
        with streams(alice, mine), streams(bob, theirs):
            refused(carol.get(f"/tasks/{waiting}", params={"wait": 1}), 503, "TASKGATE_MAX_STREAMS")
            refused(carol.get(f"/tasks/{waiting}/events"), 503, "TASKGATE_MAX_STREAMS")
        wait_for(lambda: carol.get(f"/tasks/{waiting}", params={"wait": 0.01}).status_code == 200, 30,
                 "the streams to be released")


def test_a_lost_events_connection_is_a_503_and_the_next_wait_reconnects(setup: Setup, small: str) -> None:
    with setup.clients(small, "dave") as (dave,), ThreadPoolExecutor(1) as pool:
        waiting, streamed = delayed(dave, 2)
        with streams(dave, [streamed]) as [stream]:
            held = pool.submit(dave.get, f"/tasks/{waiting}", params={"wait": 20})
            wait_for(lambda: [int(c["sub"]) for c in setup.events_connections()] == [2], 10,
                     "the wait to subscribe")
            [events] = setup.events_connections()
            setup.redis.client_kill_filter(_id=events["id"])
            # The held wait fails at once rather than hang; the stream ends (no terminal state),
            # for its client to reconnect.
            response = held.result(timeout=10)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["message"].startswith("redis unavailable"), response.text
            rest = read_until(stream, lambda seen: seen.endswith(b"0\r\n\r\n"))
            assert b"event:" not in rest, rest
        # The next wait gets a new connection, and its events.
        task_id = submit(dave, "sleepy", {"seconds": 0.2})
        response = dave.get(f"/tasks/{task_id}", params={"wait": 20})
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "succeeded"
        [fresh] = setup.events_connections()
        assert fresh["id"] != events["id"]

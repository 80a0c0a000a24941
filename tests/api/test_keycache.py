"""The API's cache of verified keys (``api/keycache.py``): answered from memory, never for a
wrong secret, dropped on a revocation's notice, on a lost subscription and at its expiry; and
the same across two real API processes on one private Valkey."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from taskgate import auth, connections
from taskgate.api import keycache
from taskgate.api.keycache import KeyCache
from taskgate.auth import Caller
from taskgate.config import Settings
from taskgate.producer.backend import Backend
from taskgate.producer.subscriptions import Subscriptions
from taskgate.records import keys
from taskgate.records.scripts import AsyncScripts

from ..helpers import start_api, stop, wait_for
from .test_auth import bearer, cli

# -- the cache in process, against a private Valkey ---------------------------------------------


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def until(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Await ``check`` until it is true, or fail saying ``what`` never happened."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(0.01)


def reads(conn: redis.Redis) -> int:
    """``HGETALL`` calls (key lookups) since the last ``CONFIG RESETSTAT``."""
    return int(conn.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))


class Setup:
    def __init__(self, url: str, ttl: float = 3600.0, size: int = keycache.SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.conn = redis.Redis.from_url(url)
        client = connections.fail_fast(url, 2.0)
        backend = Backend(Settings(redis_url=url, backend_timeout=2.0), client, AsyncScripts(client))
        notices = Subscriptions(connections.events(url, 2.0, connections.KEYS_CLIENT_NAME), 2.0)
        self.cache = KeyCache(backend, notices, ttl, size, clock)

    def key(self, owner: str = "alice", admin: bool = False) -> tuple[str, str]:
        """A new key's ``(key id, secret)``."""
        _, key = auth.create(self.conn, owner, admin)
        parsed = auth.parse(key)
        assert parsed is not None
        return parsed

    async def subscribed(self, key_id: str, secret: str) -> None:
        """Check the key until the cache is subscribed to the revocations."""
        async def live() -> bool:
            assert await self.cache.caller(key_id, secret) is not None
            return self.cache.live

        await until(live, 10, "the cache to subscribe to revocations")
        # the read that saw the subscription confirmed began before it, so it kept nothing (a
        # loaded run then counted one key kept, not two): read once more, now subscribed
        assert await self.cache.caller(key_id, secret) is not None

    async def close(self) -> None:
        await self.cache.close()
        await self.cache.backend.redis.aclose()
        self.conn.close()


def run(url: str, body: Callable[[Setup], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        setup = Setup(url, **options)
        try:
            await body(setup)
        finally:
            await setup.close()

    asyncio.run(main())


def test_a_verified_key_is_answered_from_memory_and_a_wrong_secret_never_is(own_redis_url: str) -> None:
    async def body(setup: Setup) -> None:
        key_id, secret = setup.key("alice", admin=True)
        await setup.subscribed(key_id, secret)
        assert await setup.cache.caller(key_id, secret) == Caller("alice", admin=True)  # kept now
        setup.conn.config_resetstat()
        for _ in range(5):
            assert await setup.cache.caller(key_id, secret) == Caller("alice", admin=True)
        assert reads(setup.conn) == 0
        # A wrong secret for a kept key id is checked against Redis and refused, every time.
        wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        for _ in range(3):
            assert await setup.cache.caller(key_id, wrong) is None
        assert reads(setup.conn) == 3
        assert await setup.cache.caller(key_id, secret) == Caller("alice", admin=True)
        assert await setup.cache.caller("0" * 12, secret) is None  # unknown id
        assert len(setup.cache) == 1

    run(own_redis_url, body)


def test_a_revocation_notice_drops_the_key(own_redis_url: str) -> None:
    async def body(setup: Setup) -> None:
        key_id, secret = setup.key()
        other_id, other = setup.key("bob")
        await setup.subscribed(key_id, secret)
        assert await setup.cache.caller(other_id, other) is not None
        assert len(setup.cache) == 2
        assert auth.revoke(setup.conn, key_id)

        async def refused() -> bool:
            return await setup.cache.caller(key_id, secret) is None

        await until(refused, 10, "the revoked key to be refused")  # the cache lives an hour here
        assert len(setup.cache) == 1  # bob's stays
        assert not auth.revoke(setup.conn, key_id)  # gone already

    run(own_redis_url, body)


def test_a_lost_subscription_forgets_every_key_and_keeps_none_until_subscribed_again(
        own_redis_url: str) -> None:
    async def body(setup: Setup) -> None:
        key_id, secret = setup.key()
        await setup.subscribed(key_id, secret)
        assert await setup.cache.caller(key_id, secret) is not None
        assert len(setup.cache) == 1
        [link] = [c for c in setup.conn.client_list() if c["name"] == connections.KEYS_CLIENT_NAME]
        setup.conn.client_kill_filter(_id=link["id"])

        async def forgotten() -> bool:
            return not setup.cache.live and len(setup.cache) == 0

        await until(forgotten, 10, "the cache to notice its lost subscription")
        # Checks go to Redis until a new subscription is confirmed; then keys are kept again.
        await setup.subscribed(key_id, secret)
        assert await setup.cache.caller(key_id, secret) is not None
        assert len(setup.cache) == 1
        [fresh] = [c for c in setup.conn.client_list() if c["name"] == connections.KEYS_CLIENT_NAME]
        assert fresh["id"] != link["id"]

    run(own_redis_url, body)


def test_a_read_overtaken_by_a_revocation_is_not_kept(own_redis_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The read saw the key, then the key was revoked and its notice arrived before the read's
    answer was used: that request is served (it was checked before the revocation), but the
    key is not kept, so the next request is refused."""
    async def body(setup: Setup) -> None:
        key_id, secret = setup.key()
        await setup.subscribed(key_id, secret)
        setup.cache.forget(key_id)
        real = auth.lookup

        async def overtaken(client: AsyncRedis, looked_up: str) -> dict[bytes, bytes]:
            stored = await real(client, looked_up)
            generation = setup.cache._generation
            auth.revoke(setup.conn, looked_up)

            async def noticed() -> bool:
                return setup.cache._generation != generation

            await until(noticed, 10, "the revocation's notice")
            return stored

        monkeypatch.setattr(auth, "lookup", overtaken)
        assert await setup.cache.caller(key_id, secret) is not None
        monkeypatch.setattr(auth, "lookup", real)
        assert len(setup.cache) == 0
        assert await setup.cache.caller(key_id, secret) is None

    run(own_redis_url, body)


def test_a_kept_key_expires_after_the_ttl(own_redis_url: str) -> None:
    clock = Clock()

    async def body(setup: Setup) -> None:
        key_id, secret = setup.key()
        await setup.subscribed(key_id, secret)
        assert await setup.cache.caller(key_id, secret) is not None
        setup.conn.delete(keys.apikey(key_id))  # deleted without a notice
        clock.now += 4.9
        assert await setup.cache.caller(key_id, secret) is not None  # still within its 5 s
        clock.now += 0.2
        assert await setup.cache.caller(key_id, secret) is None
        assert len(setup.cache) == 0

    run(own_redis_url, body, ttl=5.0, clock=clock)


def test_the_cache_holds_at_most_its_size(own_redis_url: str) -> None:
    async def body(setup: Setup) -> None:
        made = [setup.key(f"owner{index}") for index in range(5)]
        await setup.subscribed(*made[0])
        for key_id, secret in made:
            assert await setup.cache.caller(key_id, secret) is not None
        assert len(setup.cache) == 3
        setup.conn.config_resetstat()
        for key_id, secret in made[2:]:  # the three verified last are kept
            assert await setup.cache.caller(key_id, secret) is not None
        assert reads(setup.conn) == 0

    run(own_redis_url, body, size=3)


def test_a_ttl_of_zero_reads_redis_every_time(own_redis_url: str) -> None:
    async def body(setup: Setup) -> None:
        key_id, secret = setup.key()
        setup.conn.config_resetstat()
        for _ in range(3):
            assert await setup.cache.caller(key_id, secret) is not None
        assert reads(setup.conn) == 3
        assert len(setup.cache) == 0 and not setup.cache.live
        assert not [c for c in setup.conn.client_list() if c["name"] == connections.KEYS_CLIENT_NAME]

    run(own_redis_url, body, ttl=0.0)


# -- real API processes ---------------------------------------------------------------------------


@pytest.fixture
def conn(own_redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis_url)
    yield client
    client.close()


def submitted(base: str, key: str) -> int:
    return httpx.post(f"{base}/tasks/add", json={"x": 1, "y": 2}, headers=bearer(key), timeout=10).status_code


def answered_from_memory(conn: redis.Redis, bases: list[str], key: str) -> bool:
    """Whether every API in ``bases`` accepts ``key`` without reading it from Redis."""
    conn.config_resetstat()
    assert [submitted(base, key) for base in bases] == [202] * len(bases)
    return reads(conn) == 0


def test_a_key_revoked_through_the_cli_is_refused_by_every_api_process(
        own_redis_url: str, conn: redis.Redis, tmp_path: Path) -> None:
    """Each API keeps a verified key for an hour here: only the revocation's notice can make
    them refuse it within the deadline."""
    env = {"TASKGATE_AUTH": "on", "TASKGATE_KEY_CACHE_TTL": "3600"}
    first, base_a = start_api(own_redis_url, tmp_path / "a.log", **env)
    second, base_b = start_api(own_redis_url, tmp_path / "b.log", **env)
    try:
        _, key = auth.create(conn, "alice")
        _, other = auth.create(conn, "bob")
        bases = [base_a, base_b]
        wait_for(lambda: answered_from_memory(conn, bases, key), 20, "both APIs to keep the key")
        assert cli(own_redis_url, "keys", "revoke", key.split("_")[1]).returncode == 0
        revoked = time.monotonic()
        wait_for(lambda: [submitted(base, key) for base in bases] == [401, 401], 10,
                 "both APIs to refuse the revoked key")
        print(f"refused by both {time.monotonic() - revoked:.3f}s after `taskgate keys revoke` returned")
        assert [submitted(base, other) for base in bases] == [202, 202]  # another key is unaffected
    finally:
        stop(first)
        stop(second)


def test_a_revoked_key_whose_notice_was_lost_is_refused_once_the_subscription_drops(
        own_redis_url: str, conn: redis.Redis, tmp_path: Path) -> None:
    """The key is deleted without a notice (as if the notice were lost): the API keeps
    accepting it from memory until its subscription is killed, then refuses it, an hour before
    its cached check would expire."""
    proc, base = start_api(own_redis_url, tmp_path / "api.log", TASKGATE_AUTH="on",
                           TASKGATE_KEY_CACHE_TTL="3600")
    try:
        key_id, key = auth.create(conn, "alice")
        wait_for(lambda: answered_from_memory(conn, [base], key), 20, "the API to keep the key")
        conn.delete(keys.apikey(key_id))
        assert submitted(base, key) == 202  # the notice is lost: still accepted from memory
        [link] = [c for c in conn.client_list() if c["name"] == connections.KEYS_CLIENT_NAME]
        conn.client_kill_filter(_id=link["id"])
        wait_for(lambda: submitted(base, key) == 401, 10, "the API to refuse the deleted key")
    finally:
        stop(proc)


def test_a_revoked_key_whose_notice_was_lost_is_refused_after_the_ttl(
        own_redis_url: str, conn: redis.Redis, tmp_path: Path) -> None:
    """With the subscription intact and the notice lost, the cached check's expiry is what
    refuses the key."""
    proc, base = start_api(own_redis_url, tmp_path / "api.log", TASKGATE_AUTH="on",
                           TASKGATE_KEY_CACHE_TTL="2")
    try:
        key_id, key = auth.create(conn, "alice")
        wait_for(lambda: answered_from_memory(conn, [base], key), 20, "the API to keep the key")
        conn.delete(keys.apikey(key_id))
        started = time.monotonic()
        wait_for(lambda: submitted(base, key) == 401, 30, "the API to refuse the deleted key")
        print(f"refused {time.monotonic() - started:.3f}s after the deletion (TTL 2 s)")
        assert [c for c in conn.client_list() if c["name"] == connections.KEYS_CLIENT_NAME]
    finally:
        stop(proc)

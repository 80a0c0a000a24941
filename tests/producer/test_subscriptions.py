"""The waiters' shared pub/sub connection, against a private Valkey of its own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from taskgate.connections import events as events_client
from taskgate.exceptions import BackendUnavailable, QuotaExceeded
from taskgate.producer import subscriptions as module
from taskgate.producer.subscriptions import CLIENT_NAME, Limits, Subscriptions


async def events_connections(redis: Redis) -> list[dict[str, Any]]:
    return [client for client in await redis.client_list() if client["name"] == CLIENT_NAME]


async def numsub(redis: Redis, *channels: str) -> dict[str, int]:
    return {channel.decode(): count for channel, count in await redis.pubsub_numsub(*channels)}


def test_many_waiters_share_one_connection(own_redis_url: str) -> None:
    async def main() -> None:
        redis = Redis.from_url(own_redis_url)
        subscriptions = Subscriptions(events_client(own_redis_url, 1.0), 1.0)
        async with subscriptions("events:a") as a1, subscriptions("events:a") as a2, \
                subscriptions("events:a", "events:b") as ab:
            # Entered only once Redis confirmed: a publish now reaches every waiter.
            assert await numsub(redis, "events:a", "events:b") == {"events:a": 1, "events:b": 1}
            [connection] = await events_connections(redis)
            assert connection["sub"] == "2"
            await redis.publish("events:a", "a1")
            await redis.publish("events:b", "b1")
            assert await a1.get(5) == ("events:a", b"a1")
            assert await a2.get(5) == ("events:a", b"a1")
            assert await ab.get(5) == ("events:a", b"a1")
            assert await ab.get(5) == ("events:b", b"b1")
            assert await a1.get(0.05) is None  # b is not a1's
        # The last waiter of a channel unsubscribes it; the connection stays for the next.
        async with subscriptions("events:c") as c:
            assert await numsub(redis, "events:a", "events:b", "events:c") == {
                "events:a": 0, "events:b": 0, "events:c": 1}
            await redis.publish("events:c", "c1")
            assert await c.get(5) == ("events:c", b"c1")
            assert len(await events_connections(redis)) == 1
        # A waiter that fails leaves as any other.
        with pytest.raises(RuntimeError):
            async with subscriptions("events:d"):
                raise RuntimeError("a failed wait")
        assert subscriptions.channels == 0
        await subscriptions.close()
        await redis.aclose()

    asyncio.run(main())


def test_a_broken_connection_fails_its_waiters_and_the_next_gets_a_new_one(own_redis_url: str) -> None:
    async def main() -> None:
        redis = Redis.from_url(own_redis_url)
        subscriptions = Subscriptions(events_client(own_redis_url, 1.0), 1.0)
        async with subscriptions("events:a") as waiting:
            await redis.publish("events:a", "before")
            [connection] = await events_connections(redis)
            await redis.client_kill_filter(_id=connection["id"])
            assert await waiting.get(5) == ("events:a", b"before")  # what came before, then the error
            with pytest.raises(BackendUnavailable, match="redis unavailable"):
                await waiting.get(5)
        async with subscriptions("events:a") as again:
            [fresh] = await events_connections(redis)
            assert fresh["id"] != connection["id"]
            await redis.publish("events:a", "after")
            assert await again.get(5) == ("events:a", b"after")
        await subscriptions.close()
        await redis.aclose()

    asyncio.run(main())


def test_a_silent_connection_fails_its_waiters(own_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "KEEPALIVE", 0.2)

    async def main() -> None:
        redis = Redis.from_url(own_redis_url)
        subscriptions = Subscriptions(events_client(own_redis_url, 3.0), 3.0)
        async with subscriptions("events:a") as waiting:
            await redis.execute_command("CLIENT", "PAUSE", "1500", "ALL")  # connected, but mute
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="answered no ping within 0.2s"):
                await waiting.get(5)
            assert time.monotonic() - started < 1.5
        async with subscriptions("events:a") as again:  # entered once the pause is over
            await redis.publish("events:a", "after")
            assert await again.get(5) == ("events:a", b"after")
        await subscriptions.close()
        await redis.aclose()

    asyncio.run(main())


def test_a_waiter_cancelled_while_subscribing_leaves_the_others_subscribed(own_redis_url: str) -> None:
    async def main() -> None:
        redis = Redis.from_url(own_redis_url)
        subscriptions = Subscriptions(events_client(own_redis_url, 1.0), 1.0)

        async def hold(entered: asyncio.Event) -> None:
            async with subscriptions("events:a"):
                entered.set()
                await asyncio.Event().wait()

        entered = asyncio.Event()
        quitter = asyncio.create_task(hold(asyncio.Event()))
        await asyncio.sleep(0)  # it waits for the confirmation of its SUBSCRIBE
        quitter.cancel()
        async with subscriptions("events:a") as stays:
            await asyncio.wait({quitter})
            await redis.publish("events:a", "x")
            assert await stays.get(5) == ("events:a", b"x")
        holder = asyncio.create_task(hold(entered))
        await entered.wait()
        assert await numsub(redis, "events:a") == {"events:a": 1}
        holder.cancel()
        await asyncio.wait({holder})
        await subscriptions.close()
        await redis.aclose()

    asyncio.run(main())


def test_limits_per_owner_and_per_process() -> None:
    limits = Limits(total=3, per_owner=2)
    limits.acquire("alice")
    limits.acquire("alice")
    with pytest.raises(QuotaExceeded, match="TASKGATE_MAX_STREAMS_PER_OWNER"):
        limits.acquire("alice")
    limits.acquire("bob")
    with pytest.raises(BackendUnavailable, match="TASKGATE_MAX_STREAMS"):
        limits.acquire("carol")
    limits.release("alice")
    limits.acquire("carol")
    for _ in range(3):  # auth off: one owner, held by the total only
        limits.release(next(iter(limits.held)))
    for _ in range(3):
        limits.acquire("anonymous")
    assert limits.count == 3

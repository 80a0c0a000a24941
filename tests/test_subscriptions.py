"""Pub/sub connections reused between waits, against a private Valkey of its own."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from taskgate.subscriptions import Subscriptions


def test_a_finished_wait_hands_its_connection_to_the_next(own_redis_url: str) -> None:
    async def main() -> None:
        publisher = Redis.from_url(own_redis_url)
        subscriptions = Subscriptions(Redis.from_url(own_redis_url), keep=1)
        async with subscriptions("events:a") as first:
            await publisher.publish("events:a", "a1")
            message = await first.get_message(ignore_subscribe_messages=True, timeout=5)
            while message is None:
                message = await first.get_message(ignore_subscribe_messages=True, timeout=5)
            assert message["data"] == b"a1"
            await publisher.publish("events:a", "a2")  # left unread
        clients = int((await publisher.info("clients"))["connected_clients"])
        async with subscriptions("events:b") as second:
            assert second is first  # reused: no new connection
            assert int((await publisher.info("clients"))["connected_clients"]) == clients
            await publisher.publish("events:a", "a3")  # unsubscribed: never delivered
            await publisher.publish("events:b", "b1")
            seen = []
            while b"b1" not in seen:
                message = await second.get_message(ignore_subscribe_messages=True, timeout=5)
                if message is not None:
                    seen.append(message["data"])
            assert b"a3" not in seen  # at most the leftover a2, which readers tell by its channel
        with pytest.raises(RuntimeError):
            async with subscriptions("events:c"):
                raise RuntimeError("a failed wait")
        async with subscriptions("events:d") as third:
            assert third is not first  # the failed one was closed, not kept
        await subscriptions.close()
        await publisher.aclose()

    asyncio.run(main())

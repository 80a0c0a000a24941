"""Pub/sub connections for waiting on tasks' events, kept open between waits.

redis-py closes a ``PubSub``'s connection when the ``PubSub`` is closed, and takes that
connection from the client's pool. Waiting on a task therefore cost a fresh connection (TCP,
``HELLO``, two ``CLIENT SETINFO``) on every ``?wait=`` or SSE stream, and, sharing the pool, left
the next submit a fresh connection too. Here waits use their own client, and a finished wait
unsubscribes and hands its ``PubSub`` to the next one. A reused ``PubSub`` may still deliver a
message of its previous channels: readers look at the channel of every message.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.client import PubSub


class Subscriptions:
    """``async with subscriptions(*channels) as pubsub``: subscribed to ``channels`` (the
    subscription is sent before the block starts), unsubscribed after."""

    def __init__(self, client: Redis, keep: int = 32) -> None:
        self.client = client
        self.keep = keep  # idle PubSubs kept for reuse (each holds one connection)
        self._idle: list[PubSub] = []

    @contextlib.asynccontextmanager
    async def __call__(self, *channels: str) -> AsyncIterator[PubSub]:
        pubsub = self._idle.pop() if self._idle else self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            yield pubsub
        except BaseException:
            await _close(pubsub)  # its connection may be in any state
            raise
        try:
            await pubsub.unsubscribe()
        except Exception:
            await _close(pubsub)
            return
        if len(self._idle) < self.keep:
            self._idle.append(pubsub)
        else:
            await _close(pubsub)

    async def close(self) -> None:
        """Close the idle PubSubs and the client."""
        idle, self._idle = self._idle, []
        for pubsub in idle:
            await _close(pubsub)
        await self.client.aclose()


async def _close(pubsub: PubSub) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()  # type: ignore[no-untyped-call]

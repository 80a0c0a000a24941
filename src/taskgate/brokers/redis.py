"""A Redis/Valkey broker, written to the way kombu's Redis transport does (LPUSH)."""

from __future__ import annotations

from redis.asyncio import Redis

from .message import PRIORITY_STEPS, MessageParts, envelope, queue_for_priority


class RedisBroker:
    """Publishes to a Redis/Valkey broker the way kombu's Redis transport does (LPUSH).

    ``inline``: the broker is the Redis holding taskgate's records, so the record scripts push
    the message themselves (:meth:`inline_push`), atomically with the record's change, and
    delays wait in taskgate's delayed set."""

    def __init__(self, client: Redis, *, inline: bool = False) -> None:
        self.client = client
        self.inline = inline

    def inline_push(self, queue: str, parts: MessageParts,
                    delivery_tag: str | None = None) -> tuple[str, bytes] | None:
        """The list and envelope a record script pushes (None unless :attr:`inline`)."""
        if not self.inline:
            return None
        return queue_for_priority(queue, parts[1].get("priority", 0)), envelope(queue, parts, delivery_tag)

    async def publish(self, queue: str, parts: MessageParts) -> None:
        key = queue_for_priority(queue, parts[1].get("priority", 0))
        await self.client.lpush(key, envelope(queue, parts))

    async def ping(self) -> None:
        await self.client.ping()

    async def depth(self, queue: str) -> int | None:
        pipe = self.client.pipeline(transaction=False)
        for step in PRIORITY_STEPS:
            pipe.llen(queue_for_priority(queue, step))
        return int(sum(await pipe.execute()))

    async def close(self) -> None:
        if not self.inline:  # an inline broker's client is the records' (closed by its owner)
            await self.client.aclose()

"""RabbitMQ, published to with aio-pika on the event loop, with publisher confirms."""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import orjson

from .message import MessageParts


class AmqpBroker:
    """Publishes Celery messages to RabbitMQ with aio-pika: async, confirmed, no thread hop.

    Like Celery with a direct exchange, it publishes through the default exchange with the queue
    name as routing key, and declares each queue the way Celery does (durable, bound to a direct
    exchange of the same name) the first time, so nothing is dropped before a worker has run.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._declared: set[str] = set()
        self._lock = asyncio.Lock()

    async def _open(self) -> aio_pika.abc.AbstractChannel:
        if self._channel is not None and not self._channel.is_closed:
            return self._channel
        async with self._lock:
            if self._channel is None or self._channel.is_closed:
                await self.close()
                self._connection = await aio_pika.connect(self.url)
                self._channel = await self._connection.channel(publisher_confirms=True)
                self._declared.clear()
            return self._channel

    async def _declare(self, channel: aio_pika.abc.AbstractChannel, queue: str) -> None:
        if queue in self._declared:
            return
        exchange = await channel.declare_exchange(queue, aio_pika.ExchangeType.DIRECT, durable=True)
        declared = await channel.declare_queue(queue, durable=True)
        await declared.bind(exchange, routing_key=queue)
        self._declared.add(queue)

    #: Messages go out through :meth:`publish`, never inside a record script.
    inline = False

    def inline_push(self, queue: str, parts: MessageParts,
                    delivery_tag: str | None = None) -> tuple[str, bytes] | None:
        """Never: this broker is not a Redis list (see :class:`~taskgate.brokers.Broker`)."""
        return None

    async def publish(self, queue: str, parts: MessageParts) -> None:
        headers, properties, body = parts
        try:
            channel = await self._open()
            await self._declare(channel, queue)
            message = aio_pika.Message(
                body=orjson.dumps(body),
                content_type="application/json",
                content_encoding="utf-8",
                headers=headers,
                correlation_id=properties.get("correlation_id"),
                reply_to=properties.get("reply_to") or None,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                priority=properties.get("priority", 0),
            )
            await channel.default_exchange.publish(message, routing_key=queue)
        except (aio_pika.exceptions.AMQPError, ConnectionError) as exc:
            await self.close()
            raise OSError(f"RabbitMQ: {exc or type(exc).__name__}") from exc

    async def ping(self) -> None:
        try:
            await self._open()
        except (aio_pika.exceptions.AMQPError, ConnectionError) as exc:
            await self.close()
            raise OSError(f"RabbitMQ: {exc or type(exc).__name__}") from exc

    async def depth(self, queue: str) -> int | None:
        try:
            channel = await self._open()
            declared = await channel.declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            self._channel = None  # a failed passive declare closes the channel
            return None
        return declared.declaration_result.message_count

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await connection.close()

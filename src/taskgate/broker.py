"""Putting ordinary Celery protocol-2 messages on the broker, without blocking the event loop.

Two ways, chosen from the broker URL:

* :class:`RedisBroker` (``redis://``): the message is the exact JSON envelope kombu's Redis
  transport writes, pushed with ``redis.asyncio``. When the broker is the Redis that holds
  taskgate's records, ``jobs`` pushes it inside the submission script instead (one round trip).
* :class:`AmqpBroker` (``amqp://``, RabbitMQ): the same Celery message parts published with
  aio-pika on the event loop, with publisher confirms.
* :class:`KombuBroker` (any other kombu transport): Celery's own sender runs in a small bounded
  thread pool, under the same deadline.

An unmodified ``celery worker`` consumes what either one sends.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import os
import reprlib
import socket
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Protocol

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import orjson
from celery import Celery
from redis.asyncio import Redis

#: Celery's message parts: headers, properties, body (args, kwargs, embed).
MessageParts = tuple[dict[str, Any], dict[str, Any], tuple[Any, ...]]


#: kombu's Redis transport keeps one list per priority step: ``queue`` for 0-2,
#: ``queue\x06\x163`` for 3-5, and so on (lower number = higher priority).
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"


def queue_for_priority(queue: str, priority: int) -> str:
    """The Redis list kombu's transport uses for ``queue`` at ``priority``."""
    step = PRIORITY_STEPS[bisect.bisect(PRIORITY_STEPS, priority) - 1]
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


#: The ``origin`` header of every message this process sends (Celery computes it per call).
ORIGIN = f"taskgate@{socket.gethostname()}:{os.getpid()}"


def build_message(app: Celery, task_id: str, name: str, kwargs: dict[str, Any], *,
                  countdown: float | None = None, eta: datetime | None = None,
                  retries: int = 0) -> MessageParts:
    """Celery's own protocol-2 parts for one task call (``app.amqp.as_task_v2``).

    ``ignore_result``: taskgate's tasks keep their result in taskgate's record, so Celery's
    result backend stores nothing for them, failures included.
    """
    message = app.amqp.as_task_v2(task_id, name, (), kwargs, countdown=countdown, eta=eta,
                                  retries=retries, ignore_result=True, origin=ORIGIN, argsrepr="()",
                                  kwargsrepr=reprlib.repr(kwargs))
    return message.headers, message.properties, message.body


class MessageTemplate:
    """One task's protocol-2 message, built once by Celery (:func:`build_message`) and filled in
    per call: only the task id, the kwargs and their repr change between two submissions of a
    task sent now (a delay goes through :func:`build_message` itself)."""

    _PROBE = "\x00taskgate-probe\x00"

    def __init__(self, app: Celery, name: str) -> None:
        headers, properties, body = build_message(app, self._PROBE, name, {})
        self.headers = {key: value for key, value in headers.items() if value != self._PROBE}
        self.id_headers = tuple(key for key, value in headers.items() if value == self._PROBE)
        self.properties = {key: value for key, value in properties.items() if value != self._PROBE}
        self.id_properties = tuple(key for key, value in properties.items() if value == self._PROBE)
        self.embed = body[2]

    def parts(self, task_id: str, kwargs: dict[str, Any], priority: int = 0) -> MessageParts:
        """The message for one call: what :func:`build_message` would return, plus ``priority``."""
        headers = {**self.headers, "kwargsrepr": reprlib.repr(kwargs)}
        for key in self.id_headers:
            headers[key] = task_id
        properties = {**self.properties, "priority": priority}
        for key in self.id_properties:
            properties[key] = task_id
        return headers, properties, ((), kwargs, self.embed)


class Broker(Protocol):
    """Where submitted tasks go."""

    async def publish(self, queue: str, parts: MessageParts) -> None:
        """Put one task message on ``queue``."""

    async def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    async def depth(self, queue: str) -> int | None:
        """Messages waiting in ``queue`` (None if the broker does not know the queue)."""

    async def close(self) -> None:
        """Release connections and threads."""


class RedisBroker:
    """Publishes to a Redis/Valkey broker the way kombu's Redis transport does (LPUSH)."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    @staticmethod
    def envelope(queue: str, parts: MessageParts, delivery_tag: str | None = None) -> bytes:
        """The JSON envelope kombu's Redis transport stores in the queue list. The delivery tag
        must be unique among live messages (kombu's own is a fresh uuid4)."""
        headers, properties, body = parts
        payload = orjson.dumps(body)
        return orjson.dumps({
            "body": base64.b64encode(payload).decode("ascii"),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                **properties,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": properties.get("priority", 0),
                "body_encoding": "base64",
                "delivery_tag": delivery_tag or str(uuid.uuid4()),
            },
        })

    async def publish(self, queue: str, parts: MessageParts) -> None:
        key = queue_for_priority(queue, parts[1].get("priority", 0))
        await self.client.lpush(key, self.envelope(queue, parts))

    async def ping(self) -> None:
        await self.client.ping()

    async def depth(self, queue: str) -> int | None:
        pipe = self.client.pipeline(transaction=False)
        for step in PRIORITY_STEPS:
            pipe.llen(queue_for_priority(queue, step))
        return int(sum(await pipe.execute()))

    async def close(self) -> None:
        await self.client.aclose()


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


class KombuBroker:
    """Publishes through Celery's own sender (any kombu transport) in a bounded thread pool."""

    def __init__(self, app: Celery, timeout: float, threads: int = 4) -> None:
        self.app = app
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="taskgate-publish")

    def _publish(self, queue: str, parts: MessageParts) -> None:
        headers, properties, body = parts
        message = (headers, properties, body, None)
        with self.app.producer_pool.acquire(block=True, timeout=self.timeout) as producer:
            self.app.amqp.send_task_message(
                producer, headers["task"], message, queue=queue, retry=False,
                timeout=self.timeout, priority=properties.get("priority", 0),
            )

    def _ping(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=self.timeout)

    async def publish(self, queue: str, parts: MessageParts) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._publish, queue, parts)

    async def ping(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._ping)

    def _depth(self, queue: str) -> int | None:
        with self.app.connection_for_write() as conn:
            try:
                return int(conn.default_channel.queue_declare(queue, passive=True).message_count)
            except conn.channel_errors:
                return None

    async def depth(self, queue: str) -> int | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._depth, queue)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

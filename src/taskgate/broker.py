"""Putting ordinary Celery protocol-2 messages on the broker, without blocking the event loop.

Two ways, chosen from the broker URL:

* :class:`RedisBroker` (``redis://``): the message is the exact JSON envelope kombu's Redis
  transport writes, pushed with ``redis.asyncio``; it can join a pipeline with taskgate's own
  writes so a submission costs one round trip.
* :class:`KombuBroker` (``amqp://`` and any other kombu transport): Celery's own sender runs in a
  small bounded thread pool, under the same deadline.

An unmodified ``celery worker`` consumes what either one sends.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import orjson
from celery import Celery
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

#: Celery's message parts: headers, properties, body (args, kwargs, embed).
MessageParts = tuple[dict[str, Any], dict[str, Any], tuple[Any, ...]]


def build_message(app: Celery, task_id: str, name: str, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> MessageParts:
    """Celery's own protocol-2 parts for one task call (``app.amqp.as_task_v2``)."""
    message = app.amqp.as_task_v2(task_id, name, args, kwargs)
    return message.headers, message.properties, message.body


class Broker(Protocol):
    """Where submitted tasks go."""

    async def publish(self, queue: str, parts: MessageParts) -> None:
        """Put one task message on ``queue``."""

    async def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    async def close(self) -> None:
        """Release connections and threads."""


class RedisBroker:
    """Publishes to a Redis/Valkey broker the way kombu's Redis transport does (LPUSH)."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    @staticmethod
    def envelope(queue: str, parts: MessageParts) -> bytes:
        """The JSON envelope kombu's Redis transport stores in the queue list."""
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
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        })

    def add_to(self, pipe: Pipeline, queue: str, parts: MessageParts) -> None:
        """Queue the publish on ``pipe`` so it shares a round trip (and a MULTI) with others."""
        pipe.lpush(queue, self.envelope(queue, parts))

    async def publish(self, queue: str, parts: MessageParts) -> None:
        await self.client.lpush(queue, self.envelope(queue, parts))

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


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
                timeout=self.timeout,
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

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

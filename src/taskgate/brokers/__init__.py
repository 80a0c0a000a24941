"""Where submitted tasks go: ordinary Celery protocol-2 messages, put on the broker without
blocking the event loop. One module per transport, chosen in one place (:func:`select`):

* :class:`~.redis.RedisBroker` (``redis://``, ``rediss://``, ``valkey://``...): the exact JSON
  envelope kombu's Redis transport writes. When the broker is the Redis holding taskgate's
  records (the default), it is *inline*: the record scripts push the message themselves, in
  the same round trip and atomically with the record, and delays wait in taskgate's delayed set.
* :class:`~.amqp.AmqpBroker` (``amqp://``, RabbitMQ): aio-pika, publisher confirms.
* :class:`~.kombu.KombuBroker` (any other kombu transport): Celery's own sender in threads.

An unmodified ``celery worker`` consumes what any of them sends.
"""

from __future__ import annotations

from typing import Protocol

from celery import Celery
from redis.asyncio import Redis

from ..config import Settings
from .message import MessageParts


class Broker(Protocol):
    """Where submitted tasks go."""

    #: True when record scripts push this broker's messages themselves (:meth:`inline_push`).
    inline: bool

    def inline_push(self, queue: str, parts: MessageParts,
                    delivery_tag: str | None = None) -> tuple[str, bytes] | None:
        """The Redis list and message bytes a record script pushes (with ``delivery_tag``, which
        must be unique among live messages; a fresh one when None), or None when messages go out
        through :meth:`publish` instead."""

    async def publish(self, queue: str, parts: MessageParts) -> None:
        """Put one task message on ``queue``."""

    async def ping(self) -> None:
        """Raise if the broker cannot be reached."""

    async def depth(self, queue: str) -> int | None:
        """Messages waiting in ``queue`` (None if the broker does not know the queue)."""

    async def close(self) -> None:
        """Release connections and threads."""


def parks_delays(settings: Settings) -> bool:
    """True when the broker is inline (the Redis holding taskgate's records): delayed tasks
    and retries then wait in taskgate's delayed set and move to their queue in one atomic
    script; otherwise Celery's own ``eta`` is used."""
    return settings.broker_is_redis and settings.effective_broker_url == settings.require_redis_url()


def select(settings: Settings, app: Celery, records: Redis) -> Broker:
    """The broker ``settings`` name; ``records`` is the client of the records' Redis (used
    as the broker's when they are the same server)."""
    from ..connections import fail_fast
    from .amqp import AmqpBroker
    from .kombu import KombuBroker
    from .redis import RedisBroker

    url = settings.effective_broker_url
    if parks_delays(settings):
        return RedisBroker(records, inline=True)
    if settings.broker_is_redis:
        return RedisBroker(fail_fast(url, settings.backend_timeout, settings.redis_max_connections))
    if url.startswith(("amqp://", "amqps://", "pyamqp://")):
        return AmqpBroker(url.replace("pyamqp://", "amqp://", 1))
    return KombuBroker(app, settings.backend_timeout)

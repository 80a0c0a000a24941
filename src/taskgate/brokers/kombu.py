"""Any other kombu transport, through Celery's own sender in a small bounded thread pool."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from celery import Celery

from .message import MessageParts


def publish_blocking(app: Celery, queue: str, parts: MessageParts, timeout: float) -> None:
    """Put one task message on ``queue`` through Celery's own sender (any transport), blocking
    for at most about ``timeout`` seconds: the one blocking publish (a worker's keeper sends
    schedule ticks and admitted runs with it when the broker is not the records' Redis)."""
    headers, properties, body = parts
    with app.producer_pool.acquire(block=True, timeout=timeout) as producer:
        app.amqp.send_task_message(producer, headers["task"], (headers, properties, body, None), queue=queue,
                                   retry=False, timeout=timeout, priority=properties.get("priority", 0))


class KombuBroker:
    """Publishes through Celery's own sender (any kombu transport) in a bounded thread pool."""

    def __init__(self, app: Celery, timeout: float, threads: int = 4) -> None:
        self.app = app
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="taskgate-publish")

    def _ping(self) -> None:
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=self.timeout)

    #: Messages go out through :meth:`publish`, never inside a record script.
    inline = False

    def inline_push(self, queue: str, parts: MessageParts,
                    delivery_tag: str | None = None) -> tuple[str, bytes] | None:
        """Never: this broker is not a Redis list (see :class:`~taskgate.brokers.Broker`)."""
        return None

    async def publish(self, queue: str, parts: MessageParts) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, publish_blocking, self.app, queue, parts, self.timeout)

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

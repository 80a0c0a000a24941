"""The producer side: submit tasks and read their status, async and under deadlines.

A submission writes taskgate's own record of the task (with the result TTL) and the
Celery message in one pipelined transaction when the broker is the same Redis, so a
task is never queued without a record nor recorded without being queued. Status reads
fetch that record and Celery's result meta in one ``MGET``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .broker import Broker, KombuBroker, RedisBroker, build_message
from .celery_app import create_celery_app
from .config import Settings
from .constants import celery_result_key, task_record_key
from .exceptions import BackendUnavailable, TaskNotFound
from .states import CELERY_STATES, TaskState


@dataclass(frozen=True, slots=True)
class TaskError:
    """Why a task failed, safe to show a client: no traceback."""

    type: str
    message: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """What taskgate knows about one task."""

    task_id: str
    name: str | None
    state: TaskState
    result: Any = None
    error: TaskError | None = None
    created_at: float | None = None
    finished_at: str | None = None


def redis_client(url: str, timeout: float) -> Redis:
    """An asyncio Redis client whose every call fails fast: no hidden retries, bounded sockets."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def error_from_meta(result: Any) -> TaskError:
    """Turn Celery's stored exception (``exc_type``/``exc_message``) into a client-safe error."""
    if not isinstance(result, dict):
        return TaskError(type="TaskError", message=str(result), retryable=False)
    exc_message = result.get("exc_message")
    if isinstance(exc_message, list | tuple):
        message = ", ".join(str(part) for part in exc_message)
    else:
        message = str(exc_message or "")
    return TaskError(type=str(result.get("exc_type") or "TaskError"), message=message,
                     retryable=False)


class Gateway:
    """The API's door to the queue: submit, status, readiness; every call under a deadline."""

    def __init__(self, settings: Settings, app: Celery, state: Redis, results: Redis,
                 broker: Broker) -> None:
        self.settings = settings
        self.app = app
        self.state = state
        self.results = results
        self.broker = broker
        self.timeout = settings.backend_timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> Gateway:
        """Build the gateway and its clients (no connection is opened until first use)."""
        app = create_celery_app(settings)
        app.loader.import_default_modules()
        timeout = settings.backend_timeout
        redis_url = settings.require_redis_url()
        state = redis_client(redis_url, timeout)
        backend_url = settings.effective_result_backend
        results = state if backend_url == redis_url else redis_client(backend_url, timeout)
        broker: Broker
        if settings.broker_is_redis:
            broker_url = settings.effective_broker_url
            client = state if broker_url == redis_url else redis_client(broker_url, timeout)
            broker = RedisBroker(client)
        else:
            broker = KombuBroker(app, timeout)
        return cls(settings, app, state, results, broker)

    async def close(self) -> None:
        """Close every client this gateway opened."""
        await self.broker.close()
        if self.results is not self.state:
            await self.results.aclose()
        if not (isinstance(self.broker, RedisBroker) and self.broker.client is self.state):
            await self.state.aclose()

    @asynccontextmanager
    async def _deadline(self, component: str) -> AsyncIterator[None]:
        """Run a block within ``backend_timeout``; any failure becomes ``BackendUnavailable``."""
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except TimeoutError as exc:
            raise BackendUnavailable(component, f"no answer within {self.timeout:g}s") from exc
        except (RedisError, KombuOperationalError, OSError) as exc:
            raise BackendUnavailable(component, str(exc) or type(exc).__name__) from exc

    async def submit(self, name: str, args: tuple[Any, ...] = (),
                     kwargs: dict[str, Any] | None = None) -> str:
        """Queue task ``name`` and return its id once the broker has it."""
        task_id = str(uuid.uuid4())
        kwargs = kwargs or {}
        parts = build_message(self.app, task_id, name, args, kwargs)
        record = orjson.dumps({"name": name, "created_at": time.time()})
        key = task_record_key(task_id)
        queue = self.settings.default_queue
        ttl = self.settings.result_ttl
        broker = self.broker
        if isinstance(broker, RedisBroker) and broker.client is self.state:
            async with self._deadline("redis"):
                pipe = self.state.pipeline(transaction=True)
                pipe.set(key, record, ex=ttl)
                broker.add_to(pipe, queue, parts)
                await pipe.execute()
            return task_id
        async with self._deadline("redis"):
            await self.state.set(key, record, ex=ttl)
        try:
            async with self._deadline("broker"):
                await broker.publish(queue, parts)
        except BackendUnavailable:
            # Not queued: drop the record so the id reads as unknown, not eternally queued.
            async with self._deadline("redis"):
                await self.state.delete(key)
            raise
        return task_id

    async def status(self, task_id: str) -> TaskStatus:
        """The task's current state, result or error; ``TaskNotFound`` if it has no record."""
        record_key, meta_key = task_record_key(task_id), celery_result_key(task_id)
        async with self._deadline("redis"):
            if self.results is self.state:
                raw_record, raw_meta = await self.state.mget(record_key, meta_key)
            else:
                raw_record, raw_meta = await asyncio.gather(
                    self.state.get(record_key), self.results.get(meta_key))
        record = orjson.loads(raw_record) if raw_record else None
        meta = orjson.loads(raw_meta) if raw_meta else None
        if record is None and meta is None:
            raise TaskNotFound(task_id)
        name = record.get("name") if record else None
        created_at = record.get("created_at") if record else None
        if meta is None:
            return TaskStatus(task_id, name, TaskState.QUEUED, created_at=created_at)
        state = CELERY_STATES.get(str(meta.get("status")), TaskState.QUEUED)
        value = meta.get("result")
        return TaskStatus(
            task_id, name, state,
            result=value if state is TaskState.SUCCEEDED else None,
            error=error_from_meta(value) if state is TaskState.FAILED else None,
            created_at=created_at,
            finished_at=meta.get("date_done") if state.is_terminal else None,
        )

    async def check(self) -> dict[str, str]:
        """Ping the broker and the result store; map each component to "ok" or the problem."""
        checks: dict[str, str] = {}

        async def probe(component: str, ping: Any) -> None:
            try:
                async with self._deadline(component):
                    await ping()
                checks[component] = "ok"
            except BackendUnavailable as exc:
                checks[component] = exc.detail

        await asyncio.gather(probe("broker", self.broker.ping), probe("backend", self.results.ping))
        return checks

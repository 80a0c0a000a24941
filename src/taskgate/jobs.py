"""The producer side: submit, read, wait for, cancel and list tasks; async, under deadlines.

A submission is one Lua script on Redis: it checks the Idempotency-Key, writes the task's
record (state ``queued``), adds it to the history index and, when the broker is the same
Redis, pushes the Celery message, all atomically in one round trip. Reads are one
``HGETALL``. Waiting subscribes to the task's event channel first and reads the record
second, so no change can slip between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from celery import Celery
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import store
from .auth import Caller
from .autopipeline import OutcomeUnknown, ScriptPipeline
from .broker import (
    AmqpBroker,
    Broker,
    KombuBroker,
    MessageParts,
    MessageTemplate,
    RedisBroker,
    build_message,
    queue_for_priority,
)
from .celery_app import create_celery_app
from .config import Settings
from .constants import (
    ANONYMOUS,
    DEAD_KEY,
    DELAYED_KEY,
    EVENTS_PREFIX,
    IDEMPOTENCY_TTL,
    RATE_PREFIX,
    TASK_INDEX_KEY,
    apikey_key,
    events_channel,
    idempotency_key,
    inflight_key,
    owner_index_key,
    task_record_key,
)
from .deadlines import SUBMIT_MARGIN, Deadline, RedisClock, redis_client, unavailable
from .exceptions import (
    BackendUnavailable,
    Conflict,
    InvalidArguments,
    QuotaExceeded,
    TaskGateError,
    TaskNotFound,
    UnknownTask,
)
from .metrics import REDIS_SECONDS, SUBMITS
from .registry import TaskSpec, exposed
from .states import TaskState
from .subscriptions import Limits, Subscription, Subscriptions, events_client

#: The caller of internal and CLI operations: sees every task.
SYSTEM = Caller(owner=ANONYMOUS, admin=True)


@dataclass(frozen=True, slots=True)
class Submission:
    """What a submit returns: the task id, and whether an Idempotency-Key replayed it."""

    task_id: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One submission, ready to send."""

    task_id: str
    keys: list[str]
    args: list[Any]
    queue: str
    parts: MessageParts
    same_redis: bool
    now: float
    owner: str
    idem_key: str


@dataclass(frozen=True, slots=True)
class Options:
    """Optional submission settings a client may give (validated by the API)."""

    countdown: float | None = None
    eta: datetime | None = None
    priority: int | None = None


def _not_queued(task_id: str | None, cause: str) -> str:
    """Why a submit answers 503, and that its task will never run."""
    what = f"task {task_id} was" if task_id else "the tasks were"
    return f"{cause}: {what} not queued and will never run (submitting again makes a new task)"


def newer(changed: dict[str, Any], record: dict[str, Any] | None) -> bool:
    """Whether an event's record is at least as recent as ``record`` (by sequence number)."""
    return record is None or int(changed.get("seq", 0)) >= int(record.get("seq", 0))


def digest(name: str, arguments: dict[str, Any], options: Options) -> str:
    """A stable fingerprint of a submission, to compare bodies under one Idempotency-Key."""
    payload = orjson.dumps([name, arguments, options.countdown,
                            options.eta.isoformat() if options.eta else None, options.priority],
                           option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()


class Gateway:
    """The API's door to the queue; every Redis and broker call runs under a deadline."""

    def __init__(self, settings: Settings, app: Celery, state: Redis, broker: Broker) -> None:
        self.settings = settings
        self.app = app
        self.state = state
        self.broker = broker
        self.timeout = settings.backend_timeout
        self.catalogue: dict[str, TaskSpec] = exposed()
        self._submit = ScriptPipeline(state, store.SUBMIT, self.timeout, observe=REDIS_SECONDS.observe)
        #: Submit scripts refuse to run after the API gave up on them (on Redis's clock).
        self.clock = RedisClock(state, self.timeout)
        #: Waits on tasks' events share one connection of their own (see ``subscriptions``).
        self.subscriptions = Subscriptions(
            events_client(settings.require_redis_url(), self.timeout), self.timeout,
            Limits(settings.max_streams, settings.max_streams_per_owner or max(1, settings.max_streams // 4)))
        self._cancel = state.register_script(store.CANCEL)
        self.same_redis = isinstance(broker, RedisBroker) and broker.client is state
        #: How far back the history index reaches, in seconds.
        self._history = max(settings.result_ttl, settings.failure_ttl)
        #: Each task's message, built once by Celery and filled in per submission.
        self._templates = {name: MessageTemplate(app, spec.celery_name)
                           for name, spec in self.catalogue.items()}

    @classmethod
    def from_settings(cls, settings: Settings) -> Gateway:
        """Build the gateway and its clients (no connection is opened until first use)."""
        app = create_celery_app(settings)
        app.loader.import_default_modules()
        timeout = settings.backend_timeout
        redis_url = settings.require_redis_url()
        state = redis_client(redis_url, timeout)
        broker: Broker
        if settings.broker_is_redis:
            broker_url = settings.effective_broker_url
            broker = RedisBroker(state if broker_url == redis_url else redis_client(broker_url, timeout))
        elif settings.effective_broker_url.startswith(("amqp://", "amqps://", "pyamqp://")):
            broker = AmqpBroker(settings.effective_broker_url.replace("pyamqp://", "amqp://", 1))
        else:
            broker = KombuBroker(app, timeout)
        return cls(settings, app, state, broker)

    async def close(self) -> None:
        """Close every client this gateway opened."""
        await self.broker.close()
        await self.subscriptions.close()
        if not (isinstance(self.broker, RedisBroker) and self.broker.client is self.state):
            await self.state.aclose()

    def deadline(self, component: str = "redis") -> Deadline:
        """Run a block within ``backend_timeout``; any failure becomes ``BackendUnavailable``."""
        return Deadline(self.timeout, component)

    def spec(self, name: str) -> TaskSpec:
        """The declared task ``name``, or ``UnknownTask``."""
        spec = self.catalogue.get(name)
        if spec is None:
            raise UnknownTask(name)
        return spec

    def _prepare(self, spec: TaskSpec, arguments: BaseModel, options: Options, idempotency: str | None,
                 caller: Caller, cutoff: float) -> _Prepared:
        """Everything one submission sends: the message and the submit script's keys and args;
        the script does nothing after ``cutoff`` (a time on Redis's clock)."""
        task_id = str(uuid.uuid4())
        kwargs = arguments.model_dump(mode="json")
        now = time.time()
        due = (now + options.countdown if options.countdown is not None
               else options.eta.timestamp() if options.eta is not None else None)
        # Delays wait in taskgate's delayed set (same Redis) or, elsewhere, in Celery's eta.
        parked = self.same_redis and due is not None and due > now
        queue = spec.queue or self.settings.default_queue
        priority = options.priority or 0
        if due is None or parked:
            parts = self._templates[spec.name].parts(task_id, kwargs, priority)
        else:
            headers, properties, body = build_message(self.app, task_id, spec.celery_name, kwargs,
                                                      eta=datetime.fromtimestamp(due, tz=UTC))
            parts = (headers, {**properties, "priority": priority}, body)
        try:  # serialising is the check that the arguments travel as portable JSON
            message = b""
            if self.same_redis:
                message = RedisBroker.envelope(queue, parts, delivery_tag=task_id)
            else:
                orjson.dumps(kwargs)
        except orjson.JSONEncodeError as exc:
            raise InvalidArguments(f"arguments must travel as portable JSON: integers within 64 bits, "
                                   f"strings of valid Unicode ({exc})") from None
        owner = caller.owner
        idem_key = idempotency_key(f"{owner}:{idempotency}") if idempotency else ""
        keys = [task_record_key(task_id), TASK_INDEX_KEY, idem_key,
                queue_for_priority(queue, priority) if self.same_redis else "", DELAYED_KEY,
                owner_index_key(owner) if owner != ANONYMOUS else "",
                inflight_key(owner) if self.settings.max_in_flight else "",
                f"{RATE_PREFIX}{owner}:{int(now // 60)}"]
        args: list[Any] = [spec.name, repr(now), self.settings.result_ttl, repr(now - self._history),
                           digest(spec.name, kwargs, options) if idempotency else "", task_id, message,
                           repr(due) if parked else "",
                           owner if owner != ANONYMOUS else "", self.settings.submit_rate,
                           self.settings.max_in_flight, store.stamp(cutoff), IDEMPOTENCY_TTL]
        return _Prepared(task_id, keys, args, queue, parts, self.same_redis, now, owner, idem_key)

    def _verdict(self, prepared: _Prepared, seen: str, idempotency: str | None) -> Submission | None:
        """What the submit script said: a replay, a refusal (raised), or None for a new task."""
        if seen == "#rate":
            raise QuotaExceeded(f"{prepared.owner} may submit {self.settings.submit_rate} tasks per "
                                "minute (TASKGATE_SUBMIT_RATE)", retry_after=60 - int(prepared.now % 60))
        if seen == "#inflight":
            raise QuotaExceeded(f"{prepared.owner} has {self.settings.max_in_flight} unfinished tasks, "
                                "the most allowed (TASKGATE_MAX_IN_FLIGHT); wait for some to end",
                                retry_after=1)
        if seen == "#late":
            raise BackendUnavailable("redis", _not_queued(prepared.task_id, "it reached Redis after the "
                                                          "deadline"), prepared.task_id)
        if seen.startswith("!"):
            raise Conflict(f"Idempotency-Key {idempotency!r} was already used with a different body "
                           f"(task {seen[1:]}); use a new key for a new request")
        return Submission(seen, replayed=True) if seen else None

    async def _cutoff(self) -> float:
        """When, on Redis's clock, a submit script sent now must have run to count: before this
        API's deadline, with :data:`~taskgate.deadlines.SUBMIT_MARGIN` for the reply's way back."""
        try:
            return await self.clock.to_redis(time.time() + self.timeout - SUBMIT_MARGIN)
        except (RedisError, OSError, TimeoutError) as exc:
            raise unavailable("redis", exc, self.timeout) from exc

    def _unsent(self, task_id: str | None, exc: BaseException) -> BackendUnavailable:
        """The 503 of a submit whose script got no answer: it will never run (the script refuses
        after its deadline), unless the connection broke after sending it (then say so)."""
        what = f"task {task_id}" if task_id else "the tasks"
        if isinstance(exc, OutcomeUnknown):
            return BackendUnavailable("redis", f"{exc}: {what} may have been queued before the "
                                      "connection broke; GET /tasks/{id} tells once Redis answers "
                                      "(404: it was not)", task_id)
        cause = unavailable("redis", exc, self.timeout).detail
        return BackendUnavailable("redis", _not_queued(task_id, cause), task_id)

    async def _publish_elsewhere(self, prepared: _Prepared) -> None:
        """Publish to a broker other than the records' Redis; undo the record if that fails."""
        try:
            async with self.deadline("broker"):
                await self.broker.publish(prepared.queue, prepared.parts)
        except BackendUnavailable:
            # Not queued: forget it, so its id reads as unknown rather than eternally queued.
            async with self.deadline():
                pipe = self.state.pipeline(transaction=True)
                pipe.delete(prepared.keys[0], *([prepared.idem_key] if prepared.idem_key else []))
                for index in (TASK_INDEX_KEY, owner_index_key(prepared.owner), inflight_key(prepared.owner)):
                    pipe.zrem(index, prepared.task_id)
                await pipe.execute()
            raise

    async def submit(self, spec: TaskSpec, arguments: BaseModel, options: Options | None = None,
                     idempotency: str | None = None, caller: Caller = SYSTEM) -> Submission:
        """Queue ``spec`` with validated ``arguments`` for ``caller``; return once the broker has
        the message. Quotas and Idempotency-Keys are per owner."""
        prepared = self._prepare(spec, arguments, options or Options(), idempotency, caller,
                                 await self._cutoff())
        try:  # the pipeline holds each round trip to backend_timeout
            seen = cast(bytes, await self._submit(prepared.keys, prepared.args)).decode()
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unsent(prepared.task_id, exc) from exc
        replay = self._verdict(prepared, seen, idempotency)
        if replay is not None:
            return replay
        SUBMITS.labels(spec.name).inc()
        if not prepared.same_redis:
            await self._publish_elsewhere(prepared)
        return Submission(prepared.task_id)

    async def submit_many(self, spec: TaskSpec, items: list[BaseModel], options: Options | None = None,
                          caller: Caller = SYSTEM) -> list[Submission | TaskGateError]:
        """Queue one task per item in one Redis round trip (when the broker is that Redis); each
        item gets its id or the reason it was refused (a quota)."""
        cutoff = await self._cutoff()
        prepared = [self._prepare(spec, item, options or Options(), None, caller, cutoff) for item in items]
        # One round trip (the calls share a pipeline), held to backend_timeout.
        replies = await asyncio.gather(*(self._submit(one.keys, one.args) for one in prepared),
                                       return_exceptions=True)
        for one, reply in zip(prepared, replies, strict=True):
            if isinstance(reply, BaseException):
                raise self._unsent(one.task_id if len(prepared) == 1 else None, reply) from reply
        seen = [cast(bytes, raw).decode() for raw in replies]
        outcomes: list[Submission | TaskGateError] = []
        for one, said in zip(prepared, seen, strict=True):
            try:
                self._verdict(one, said, None)
            except TaskGateError as exc:
                outcomes.append(exc)
                continue
            if not one.same_redis:
                await self._publish_elsewhere(one)
            outcomes.append(Submission(one.task_id))
        SUBMITS.labels(spec.name).inc(sum(isinstance(o, Submission) for o in outcomes))
        return outcomes

    async def get(self, task_id: str, caller: Caller = SYSTEM) -> dict[str, Any]:
        """The task's record, or ``TaskNotFound`` (also when ``caller`` may not see it: ids of
        other owners' tasks must not leak)."""
        async with self.deadline():
            raw = await self.state.hgetall(task_record_key(task_id))
        if not raw:
            raise TaskNotFound(task_id)
        record = {"task_id": task_id, **store.decode_record(raw)}
        if not caller.may_see(record.get("owner")):
            raise TaskNotFound(task_id)
        return record

    async def wait_many(self, task_ids: list[str], seconds: float,
                        caller: Caller = SYSTEM) -> list[dict[str, Any] | None]:
        """The records of ``task_ids`` once all have ended or ``seconds`` passed (None for an id
        the caller cannot see); woken by the workers' events, not by polling."""
        deadline = time.monotonic() + seconds
        async with contextlib.AsyncExitStack() as stack:
            subscription = None
            async with self.deadline():
                if seconds > 0:
                    subscription = await stack.enter_async_context(self.subscriptions(
                        *(events_channel(task_id) for task_id in task_ids), owner=caller.owner))
                pipe = self.state.pipeline(transaction=False)
                for task_id in task_ids:
                    pipe.hgetall(task_record_key(task_id))
                raws = await pipe.execute()
            records: dict[str, dict[str, Any] | None] = {}
            for task_id, raw in zip(task_ids, raws, strict=True):
                record = {"task_id": task_id, **store.decode_record(raw)} if raw else None
                records[task_id] = record if record and caller.may_see(record.get("owner")) else None
            pending = {task_id for task_id, record in records.items()
                       if record is not None and not TaskState(record["state"]).is_terminal}
            while subscription is not None and pending and (remaining := deadline - time.monotonic()) > 0:
                message = await subscription.get(remaining)
                if message is None:
                    continue
                task_id = message[0].removeprefix(EVENTS_PREFIX)
                if task_id not in pending:
                    continue
                changed = {"task_id": task_id, **store.decode_record(orjson.loads(message[1]))}
                if newer(changed, records[task_id]):
                    records[task_id] = changed
                    if TaskState(changed["state"]).is_terminal:
                        pending.discard(task_id)
            return [records[task_id] for task_id in task_ids]

    async def api_key(self, key_id: str) -> dict[bytes, bytes]:
        """The stored form of an API key (empty if unknown or revoked)."""
        async with self.deadline():
            return cast(dict[bytes, bytes], await self.state.hgetall(apikey_key(key_id)))

    @asynccontextmanager
    async def watch(self, task_id: str,
                    caller: Caller = SYSTEM) -> AsyncIterator[tuple[dict[str, Any], Subscription]]:
        """Subscribe to the task's changes (confirmed by Redis), then read its record:
        ``(record, subscription)``. Counted against the caller's and the process's limits on
        waits (``QuotaExceeded``, ``BackendUnavailable``)."""
        async with contextlib.AsyncExitStack() as stack:
            async with self.deadline():
                subscription = await stack.enter_async_context(
                    self.subscriptions(events_channel(task_id), owner=caller.owner))
            yield await self.get(task_id, caller), subscription

    async def next_change(self, task_id: str, subscription: Subscription,
                          timeout: float) -> dict[str, Any] | None:  # noqa: ASYNC109
        """The record after its next change, or None if nothing changed within ``timeout``;
        ``BackendUnavailable`` if the events connection broke."""
        message = await subscription.get(timeout)
        if message is None or message[0] != events_channel(task_id):
            return None
        return {"task_id": task_id, **store.decode_record(orjson.loads(message[1]))}

    async def wait(self, task_id: str, seconds: float, caller: Caller = SYSTEM) -> dict[str, Any]:
        """The record once terminal, or as it is after ``seconds``; woken by events, not polling."""
        deadline = time.monotonic() + seconds
        async with self.watch(task_id, caller) as (record, subscription):
            while not TaskState(record["state"]).is_terminal:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                changed = await self.next_change(task_id, subscription, remaining)
                if changed is not None and newer(changed, record):
                    record = changed
            return record

    async def cancel(self, task_id: str, terminate: bool = False,
                     caller: Caller = SYSTEM) -> dict[str, Any]:
        """Cancel a queued task at once, or flag a running one; ``Conflict`` if it finished."""
        await self.get(task_id, caller)
        async with self.deadline():
            outcome = (await self._cancel(
                keys=[task_record_key(task_id), events_channel(task_id), DELAYED_KEY],
                args=[repr(time.time()), self.settings.result_ttl])).decode()
        if outcome == "missing":
            raise TaskNotFound(task_id)
        if outcome.startswith("already:"):
            raise Conflict(f"task {task_id} already {outcome.removeprefix('already:')}; only queued, "
                           "retrying or started tasks can be cancelled")
        if outcome == "cancelling" and terminate:
            loop = asyncio.get_running_loop()
            async with self.deadline("broker"):
                await loop.run_in_executor(None, self._revoke, task_id)
        return await self.get(task_id, caller)

    def _revoke(self, task_id: str) -> None:
        self.app.control.revoke(task_id, terminate=True, signal="SIGTERM")

    async def forget(self, task_id: str, caller: Caller = SYSTEM) -> None:
        """Delete a finished task's record; ``Conflict`` while it may still run."""
        record = await self.get(task_id, caller)
        if not TaskState(record["state"]).is_terminal:
            raise Conflict(f"task {task_id} is {record['state']}; cancel it first or wait until it ends")
        async with self.deadline():
            pipe = self.state.pipeline(transaction=True)
            pipe.delete(task_record_key(task_id))
            pipe.zrem(TASK_INDEX_KEY, task_id)
            pipe.zrem(owner_index_key(record.get("owner", ANONYMOUS)), task_id)
            pipe.zrem(DEAD_KEY, task_id)
            await pipe.execute()

    async def check(self) -> dict[str, str]:
        """Ping the broker and Redis; map each to "ok" or the problem seen."""
        checks: dict[str, str] = {}

        async def probe(component: str, ping: Any) -> None:
            try:
                async with self.deadline(component):
                    await ping()
                checks[component] = "ok"
            except BackendUnavailable as exc:
                checks[component] = exc.detail

        await asyncio.gather(probe("broker", self.broker.ping), probe("backend", self.state.ping))
        return checks

"""Submitting: one Lua script per task records it (``queued``), checks its Idempotency-Key
and quotas, indexes it and, when the broker is a list on the same Redis, pushes the Celery
message, all atomically in one round trip (round trips are shared, see ``autopipeline``).
Any other broker is published to after the script, and the record is undone if that fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import orjson
from celery import Celery
from pydantic import BaseModel
from redis.exceptions import RedisError

from .. import tracing
from ..auth import Caller
from ..brokers import Broker
from ..constants import ANONYMOUS, IDEMPOTENCY_TTL
from ..exceptions import BackendUnavailable, Conflict, InvalidArguments, QuotaExceeded, TaskGateError
from ..records import keys, scripts
from ..records.model import stamp
from ..registry import TaskSpec
from .autopipeline import OutcomeUnknown, ScriptPipeline
from .backend import Backend
from .deadlines import SUBMIT_MARGIN, RedisClock, unavailable
from .dispatch import Dispatcher, Message
from .metrics import REDIS_SECONDS, SUBMITS

#: The caller of internal and CLI operations: sees every task.
SYSTEM = Caller(owner=ANONYMOUS, admin=True)


@dataclass(frozen=True, slots=True)
class Submission:
    """What a submit returns: the task id, whether an Idempotency-Key replayed it, and, when
    traced, the trace id and span id of its ``taskgate submit`` span (for its log line)."""

    task_id: str
    replayed: bool = False
    trace_ids: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Options:
    """Optional submission settings a client may give (validated by the API)."""

    countdown: float | None = None
    eta: datetime | None = None
    priority: int | None = None
    #: The task this submission replays (kept in its record as ``replay_of``).
    replay_of: str | None = None
    #: Its expiry, in seconds since the epoch: not started by then, it never runs (``expired``).
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class _Prepared:
    """One submission, ready to send."""

    message: Message
    call: scripts.Call[scripts.SubmitReply]
    owner: str
    #: The Idempotency-Key's Redis key ('' without one).
    idem: str

    @property
    def task_id(self) -> str:
        return self.message.task_id


def digest(name: str, arguments: dict[str, Any], options: Options) -> str:
    """A stable fingerprint of a submission, to compare bodies under one Idempotency-Key."""
    payload = orjson.dumps([name, arguments, options.countdown,
                            options.eta.isoformat() if options.eta else None, options.priority],
                           option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()


def _not_queued(task_id: str | None, cause: str) -> str:
    """Why a submit answers 503, and that its task will never run."""
    what = f"task {task_id} was" if task_id else "the tasks were"
    return f"{cause}: {what} not queued and will never run (submitting again makes a new task)"


def _refused(task_id: str | None, cause: str) -> BackendUnavailable:
    """The 503 of a submit known not to have queued its task (``task_id``; None for a batch):
    its script never reached Redis, or refused as it came past its deadline."""
    return BackendUnavailable("redis", _not_queued(task_id, cause), task_id, outcome="not_queued")


def _unknown(task_id: str | None, cause: str) -> BackendUnavailable:
    """The 503 of a submit whose script was sent and not answered in time: it ran only if Redis
    ran it before its deadline (after that the script refuses), which nothing here can tell."""
    if task_id is None:
        return BackendUnavailable("redis", f"{cause}: the outcome of these tasks is unknown: they may "
                                  "have been queued and may run; GET /tasks (tg.history) lists those "
                                  "that were, once Redis answers", outcome="unknown")
    return BackendUnavailable(
        "redis", f"{cause}: the outcome of task {task_id} is unknown: it may have been queued and may "
        f"run. GET /tasks/{task_id} (tg.job(id).status()) tells once Redis answers (404, "
        "TaskNotFound: it was not queued and never will be); or submit again with the same "
        "Idempotency-Key, which answers with this task if it was queued", task_id, outcome="unknown")


class Submitter:
    """Queues tasks; every Redis and broker call runs under the backend's deadline."""

    def __init__(self, backend: Backend, broker: Broker, app: Celery, catalogue: dict[str, TaskSpec]) -> None:
        self.backend, self.broker, self.app = backend, broker, app
        self.settings = backend.settings
        self._pipeline = ScriptPipeline(backend.redis, scripts.source("submit"), backend.timeout,
                                        observe=REDIS_SECONDS.observe)
        #: Submit scripts refuse to run after the API gave up on them (on Redis's clock).
        self.clock = RedisClock(backend.redis, backend.timeout)
        self._deadline = scripts.AtSend(self._deadline_from_now)
        #: How far back the history index reaches, in seconds.
        self._history = max(self.settings.result_ttl, self.settings.failure_ttl)
        #: The one way into the queue: builds each run's message and script input.
        self.dispatcher = Dispatcher(app, inline=broker.inline)
        for spec in catalogue.values():  # each task's message template, built once by Celery
            self.dispatcher.template(spec.celery_name)

    def _prepare(self, task_id: str, spec: TaskSpec, arguments: BaseModel, options: Options,
                 idempotency: str | None, caller: Caller, cutoff: scripts.AtSend) -> _Prepared:
        """Everything one submission sends; the script does nothing after ``cutoff`` (a time on
        Redis's clock)."""
        kwargs = arguments.model_dump(mode="json")
        now = time.time()
        due = (now + options.countdown if options.countdown is not None
               else options.eta.timestamp() if options.eta is not None else None)
        # Delays wait in taskgate's delayed set (a broker list on this Redis) or in Celery's eta.
        inline = self.dispatcher.inline
        parked = inline and due is not None and due > now
        owner = caller.owner
        try:  # serialising is the check that the arguments travel as portable JSON
            arguments_json = orjson.dumps(kwargs)  # kept in the record (shown, and replayed)
            message = self.dispatcher.message(
                spec.celery_name, task_id, kwargs, queue=spec.queue or self.settings.default_queue,
                owner=owner, priority=options.priority or 0,
                eta=due if due is not None and not parked else None, delivery_tag=task_id)
        except orjson.JSONEncodeError as exc:
            raise InvalidArguments(f"arguments must travel as portable JSON: integers within 64 bits, "
                                   f"strings of valid Unicode ({exc})") from None
        expires_at = (options.expires_at if options.expires_at is not None
                      else now + spec.expires if spec.expires is not None else None)
        run = self.dispatcher.enqueue(message, spec.name, spec, kwargs, scripts.Enqueue(
            task_id, spec.name, now=now, owner=owner, ttl=self.settings.result_ttl,
            horizon=now - self._history, message=b"", queue=None, due=due if parked else None,
            idempotency=idempotency, digest=digest(spec.name, kwargs, options) if idempotency else "",
            rate_limit=self.settings.submit_rate, inflight_limit=self.settings.max_in_flight,
            deadline=cutoff, idempotency_ttl=IDEMPOTENCY_TTL, arguments=arguments_json,
            replay_of=options.replay_of, expires_at=expires_at, **tracing.record_ids()))
        return _Prepared(message, scripts.submit(run), owner,
                         keys.idempotency(owner, idempotency) if idempotency else "")

    def _verdict(self, prepared: _Prepared, reply: scripts.SubmitReply,
                 idempotency: str | None) -> Submission | None:
        """What the submit script said: a replay, a refusal (raised), or None for a new task."""
        task_id = prepared.task_id
        match reply.kind:
            case "rate":
                raise QuotaExceeded(f"{prepared.owner} may submit {self.settings.submit_rate} tasks per "
                                    "minute (TASKGATE_SUBMIT_RATE)",
                                    retry_after=max(1, math.ceil(60 if reply.retry_after is None
                                                                 else reply.retry_after)))
            case "inflight":
                raise QuotaExceeded(f"{prepared.owner} has {self.settings.max_in_flight} unfinished tasks, "
                                    "the most allowed (TASKGATE_MAX_IN_FLIGHT); wait for some to end",
                                    retry_after=1)
            case "late":
                raise _refused(task_id, "it reached Redis after the deadline")
            case "conflict":
                raise Conflict(f"Idempotency-Key {idempotency!r} was already used with a different body "
                               f"(task {reply.task_id}); use a new key for a new request")
            case "replayed":
                return Submission(str(reply.task_id), replayed=True)
        return None

    async def _cutoff(self, task_id: str | None) -> scripts.AtSend:
        """When, on Redis's clock, a submit script must have run to count: before the deadline
        of the pipeline's round trip that sends it, less
        :data:`~taskgate.producer.deadlines.SUBMIT_MARGIN` for the reply; read as the round trip
        starts (see :class:`~taskgate.records.scripts.AtSend`). Reading Redis's clock fails
        before anything was sent: the task (``task_id``) never runs."""
        try:
            await self.clock.ready()
        except (RedisError, OSError, TimeoutError) as exc:
            cause = unavailable("redis", exc, self.backend.timeout).detail
            raise _refused(task_id, cause) from exc
        return self._deadline

    def _deadline_from_now(self) -> int:
        return stamp(self.clock.at(time.time() + self.backend.timeout - SUBMIT_MARGIN))

    def _unsent(self, task_id: str | None, exc: BaseException) -> BackendUnavailable:
        """The 503 of a submit whose script got no answer: not queued when it never reached
        Redis; else (``OutcomeUnknown``: sent, its answer late or lost) unknown."""
        if isinstance(exc, OutcomeUnknown):
            return _unknown(task_id, str(exc))
        return _refused(task_id, unavailable("redis", exc, self.backend.timeout).detail)

    async def _send(self, prepared: _Prepared) -> scripts.SubmitReply:
        reply = await self._pipeline(prepared.call.keys, prepared.call.args)
        return prepared.call.parse(reply)

    async def _publish_elsewhere(self, prepared: _Prepared) -> None:
        """Publish to a broker other than the records' Redis; undo the record if that fails."""
        try:
            async with self.backend.deadline("broker"):
                await self.broker.publish(prepared.message.queue, prepared.message.parts)
        except BackendUnavailable:
            # Not queued: forget it, so its id reads as unknown rather than eternally queued.
            task_id = prepared.task_id
            idem = prepared.idem
            async with self.backend.deadline():
                pipe = self.backend.redis.pipeline(transaction=True)
                pipe.delete(keys.record(task_id), *([idem] if idem else []))
                for index in (keys.INDEX, keys.owner_index(prepared.owner), keys.inflight(prepared.owner)):
                    pipe.zrem(index, task_id)
                await pipe.execute()
            raise

    async def submit(self, spec: TaskSpec, arguments: BaseModel, options: Options | None = None,
                     idempotency: str | None = None, caller: Caller = SYSTEM,
                     links: Iterable[tracing.Link | None] = ()) -> Submission:
        """Queue ``spec`` with validated ``arguments`` for ``caller``; return once the broker has
        the message. Quotas and Idempotency-Keys are per owner. Traced, when tracing is on, as a
        PRODUCER span ``taskgate submit <task>`` (``taskgate.tracing``), the child of the
        current span (the submitting request's), with ``links`` (a replay's: to the run it
        replays), its trace kept in the record."""
        task_id = str(uuid.uuid4())
        with tracing.producer_span(spec.name, task_id, spec.queue or self.settings.default_queue,
                                   owner=caller.owner, links=links) as span:
            submission = await self._submit(task_id, spec, arguments, options, idempotency, caller)
            return submission if span is None else replace(submission, trace_ids=tracing.current_ids())

    async def _submit(self, task_id: str, spec: TaskSpec, arguments: BaseModel, options: Options | None,
                      idempotency: str | None, caller: Caller) -> Submission:
        prepared = self._prepare(task_id, spec, arguments, options or Options(), idempotency, caller,
                                 await self._cutoff(task_id))
        try:  # the pipeline holds each round trip to backend_timeout
            reply = await self._send(prepared)
        except (RedisError, OSError, TimeoutError) as exc:
            raise self._unsent(prepared.task_id, exc) from exc
        replay = self._verdict(prepared, reply, idempotency)
        if replay is not None:
            tracing.annotate(taskgate__replayed=True, messaging__message__id=replay.task_id)
            return replay
        SUBMITS.labels(spec.name).inc()
        if reply.kind == "queued" and not self.dispatcher.inline:  # a waiting run: the outbox's
            await self._publish_elsewhere(prepared)
        return Submission(prepared.task_id)

    async def submit_many(self, spec: TaskSpec, items: list[BaseModel], options: Options | None = None,
                          caller: Caller = SYSTEM) -> list[Submission | TaskGateError]:
        """Queue one task per item in one Redis round trip (when the broker is that Redis); each
        item gets its id or the reason it was refused (a quota). Traced, each item is a PRODUCER
        span ``taskgate submit <task>`` of its own, the current span's child (the request's),
        ended once the round trip answered (an item refused records why)."""
        cutoff = await self._cutoff(None)
        queue = spec.queue or self.settings.default_queue
        prepared: list[_Prepared] = []
        spans: list[tracing.Span | None] = []
        for item in items:
            task_id = str(uuid.uuid4())
            span = tracing.start_producer(spec.name, task_id, queue, owner=caller.owner)
            spans.append(span)
            try:
                with tracing.current(span):  # its message carries its own span
                    prepared.append(self._prepare(task_id, spec, item, options or Options(), None, caller,
                                                  cutoff))
            except BaseException as exc:
                for started in spans:
                    tracing.finish(started, exc)
                raise
        # One round trip (the calls share a pipeline), held to backend_timeout.
        replies = await asyncio.gather(*(self._send(one) for one in prepared), return_exceptions=True)
        outcomes: list[Submission | TaskGateError] = []
        for one, reply in zip(prepared, replies, strict=True):
            if isinstance(reply, BaseException):
                unsent = self._unsent(one.task_id if len(prepared) == 1 else None, reply)
                for span in spans:
                    tracing.finish(span, unsent)
                raise unsent from reply
        for i, (one, reply, span) in enumerate(zip(prepared, replies, spans, strict=True)):
            assert not isinstance(reply, BaseException)
            try:
                self._verdict(one, reply, None)
            except TaskGateError as exc:
                tracing.finish(span, exc)
                outcomes.append(exc)
                continue
            if reply.kind == "queued" and not self.dispatcher.inline:
                try:
                    await self._publish_elsewhere(one)
                except BaseException as exc:
                    for left in spans[i:]:
                        tracing.finish(left, exc)
                    raise
            tracing.finish(span)
            outcomes.append(Submission(one.task_id))
        SUBMITS.labels(spec.name).inc(sum(isinstance(o, Submission) for o in outcomes))
        return outcomes

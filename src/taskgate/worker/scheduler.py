"""Schedules fire from every worker's keeper: no beat process.

Each keeper pass (every 0.5 s, see ``recovery``) reads the schedules due by now from one sorted
set (:data:`~taskgate.records.keys.SCHEDULES_DUE`, score: the next tick in ms; an indexed
lookup, never a scan) and, for each, runs ``fire.lua``, which claims the tick and queues its
run in one atomic step: the script does nothing unless the schedule's due score is still the
one this keeper read, so with any number of workers a tick fires once.

A tick handled more than :data:`LATE_GRACE` seconds after its time, that came due before this
keeper's current run began, was missed (no worker fired it in time):
``catchup: none`` fires nothing for it and moves on to the first tick after now; ``catchup:
one`` fires once, for the latest missed tick. A schedule whose task no live worker has fires
nothing and says so in its ``problem`` field until a worker with the task is back.

At worker start, :func:`sync_declared` creates or updates the schedules declared in code
(``@taskgate.task(schedule=...)``) and removes the declared schedules of this worker's task
modules whose declaration is gone.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from typing import cast

import orjson
from celery import Celery
from redis import Redis
from redis.exceptions import ResponseError

from .. import registry, tracing
from ..brokers import parks_delays
from ..brokers.kombu import publish_blocking
from ..config import Settings
from ..constants import ANONYMOUS
from ..exceptions import InvalidArguments
from ..producer.dispatch import Dispatcher, Message, schedule_link
from ..records import keys, scripts
from ..records.schedules import ScheduleRecord, decode, definition, drop
from ..records.workers import heartbeats
from ..registry import TaskSpec

log = logging.getLogger("taskgate.schedules")

#: A tick fired later than this after its time counts as missed (see ``catchup``).
LATE_GRACE = 5.0
#: Due schedules handled per keeper pass, at most.
FIRE_BATCH = 100
#: How long the keeper trusts its view of which tasks the live workers have.
WORKERS_VIEW_TTL = 5.0


def ms(seconds: float) -> int:
    """Epoch seconds as the integer milliseconds schedules are scored with."""
    return round(seconds * 1000)


def declared_id(task_name: str) -> str:
    """The id of the schedule declared with task ``task_name``."""
    return f"declared-{task_name}"


def declared_digest(spec: TaskSpec) -> str:
    """A fingerprint of a declared schedule's definition: a worker changes the stored schedule
    only when this differs (so a restart does not move its next tick)."""
    assert spec.schedule is not None
    timing = spec.schedule
    payload = orjson.dumps([spec.name, spec.celery_name, spec.queue, timing.cron, timing.every,
                            timing.timezone, timing.arguments, timing.overlap, timing.catchup],
                           option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()


class Firer:
    """Fires due schedules for one keeper (blocking client, keeper thread)."""

    def __init__(self, app: Celery, client: Redis, settings: Settings, own_tasks: list[str]) -> None:
        self.app, self.client, self.settings = app, client, settings
        self.scripts = scripts.Scripts(client)
        #: The one way into the queue (its messages; the fire script sends them).
        self.dispatcher = Dispatcher(app, inline=parks_delays(settings))
        self.own_tasks = set(own_tasks)
        self._live_tasks: set[str] = set()
        self._live_read = 0.0
        #: When the next schedule is due (epoch seconds), as the last check saw.
        self.next_at: float | None = None
        #: Since when this keeper has checked without a failure: a tick due before that, and
        #: over LATE_GRACE late, was missed (no keeper fired it in time); one due after is a
        #: backlog this keeper is working through.
        self.alive_since: float | None = None

    def due(self, now: float) -> list[tuple[str, int]]:
        """The schedules due by ``now``: (id, due score in ms); also notes when the next one is
        due (:attr:`next_at`). One round trip of two indexed lookups when nothing is due."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrangebyscore(keys.SCHEDULES_DUE, "-inf", ms(now), start=0, num=FIRE_BATCH, withscores=True)
        pipe.zrangebyscore(keys.SCHEDULES_DUE, f"({ms(now)}", "+inf", start=0, num=1, withscores=True)
        raw, upcoming = cast(tuple[list[tuple[bytes, float]], list[tuple[bytes, float]]], pipe.execute())
        self.next_at = upcoming[0][1] / 1000 if upcoming else None
        return [(member.decode(), int(score)) for member, score in raw]

    def wait_hint(self, longest: float) -> float:
        """How long the keeper may sleep before the next due tick, at most ``longest``: it wakes
        at the tick rather than up to a pass later."""
        if self.next_at is None:
            return longest
        return max(0.0, min(longest, self.next_at - time.time()))

    def fire_due(self, now: float | None = None) -> int:
        """Fire every schedule due by ``now``; the number of runs queued."""
        now = time.time() if now is None else now
        due = self.due(now)
        if not due:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for schedule_id, _ in due:
            pipe.hgetall(keys.schedule(schedule_id))
        if self.alive_since is None:
            self.alive_since = now
        fired = 0
        for (schedule_id, score), raw in zip(due, pipe.execute(), strict=True):
            try:
                fired += self.fire_one(decode(schedule_id, raw), score, now)
            except (InvalidArguments, ResponseError, ValueError, TypeError) as exc:
                # a stored value no script or codec can use (edited by hand): this schedule stops
                # firing and says why; the others go on
                log.error("schedule %s cannot fire: %s", schedule_id, exc)
                self.client.zrem(keys.SCHEDULES_DUE, schedule_id)
                if self.client.exists(keys.schedule(schedule_id)):
                    self.client.hset(keys.schedule(schedule_id), "problem", f"it cannot fire: {exc}")
        if fired or len(due) == FIRE_BATCH:
            self.next_at = now  # more may be due: the next pass at once
        return fired

    def fire_one(self, schedule: ScheduleRecord, score: int, now: float) -> int:
        """Decide what the tick due at ``score`` (ms) does, and do it; 1 if a run was queued."""
        if not schedule.task:
            self.client.zrem(keys.SCHEDULES_DUE, schedule.schedule_id)  # its hash is gone
            return 0
        timing = schedule.timing()
        anchor = schedule.anchor.timestamp() if schedule.anchor else score / 1000
        tick: float | None = score / 1000
        began = self.alive_since if self.alive_since is not None else now
        if now - score / 1000 > LATE_GRACE and score / 1000 < began:  # missed while no keeper ran
            tick = (timing.last_at_or_before(now, anchor, since=score / 1000 - 0.001)
                    if timing.catchup == "one" else None)
            next_due = ms(timing.next_after(now, anchor))
        else:  # on time, or late behind other due schedules while this keeper ran
            next_due = ms(timing.next_after(score / 1000, anchor))
        next_due = max(next_due, score + 1)  # never the tick it fires
        problem = ""
        if tick is not None and not self.has_worker(schedule):
            problem = (f"no live worker has task {schedule.task!r} ({schedule.celery_name}): the schedule "
                       "fires nothing until one does")
            tick = None
        mode: scripts.FireMode = "fire" if tick is not None else "miss"
        task_id = str(uuid.uuid4())
        queue = schedule.queue or self.settings.default_queue
        with self._traced(schedule, task_id, queue, mode) as span:
            verdict, message = self._fire(schedule, score, next_due, tick, mode, problem, task_id, queue, now)
            if span is not None:
                tracing.annotate(taskgate__schedule__id=schedule.schedule_id,
                                 taskgate__schedule__tick=ms(tick or now),
                                 taskgate__schedule__verdict=verdict)
            if verdict == "fired-out":
                self._publish(schedule, message)
        if verdict in ("fired", "fired-out"):
            log.info("schedule %s fired task %s for its tick %s", schedule.schedule_id, task_id,
                     time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(tick or now)))
            return 1
        if verdict == "missed" and problem:
            log.warning("schedule %s: %s", schedule.schedule_id, problem)
        elif verdict.startswith("#"):
            log.warning("schedule %s: its run was refused (%s)", schedule.schedule_id, verdict)
        return 0

    def _traced(self, schedule: ScheduleRecord, task_id: str, queue: str,
                mode: scripts.FireMode) -> AbstractContextManager[tracing.Span | None]:
        """A tick's run (mode ``fire``), traced: a PRODUCER span starting a trace of its own (no
        request asked for it), linked to its schedule (``dispatch.schedule_link``)."""
        if mode != "fire" or not tracing.active():
            return nullcontext()
        linked = schedule_link(schedule.schedule_id, schedule.traceparent)
        return tracing.producer_span(schedule.task or "", task_id, queue, owner=schedule.owner or ANONYMOUS,
                                     root=True, links=[linked])

    def _fire(self, schedule: ScheduleRecord, score: int, next_due: int, tick: float | None,
              mode: scripts.FireMode, problem: str, task_id: str, queue: str,
              now: float) -> tuple[str, Message]:
        """Run ``fire.lua`` for one tick: its verdict, and the run's message."""
        task = schedule.task or ""
        spec = registry.declared(task)
        message = self.dispatcher.message(schedule.celery_name or f"taskgate.{task}", task_id,
                                          schedule.arguments, owner=schedule.owner or ANONYMOUS,
                                          delivery_tag=task_id, queue=queue)
        run = self.dispatcher.enqueue(message, task, spec, schedule.arguments, scripts.Enqueue(
            task_id, task, now=now, owner=schedule.owner or ANONYMOUS, ttl=self.settings.result_ttl,
            horizon=now - max(self.settings.result_ttl, self.settings.failure_ttl), message=b"", queue=None,
            rate_limit=self.settings.submit_rate, inflight_limit=self.settings.max_in_flight,
            arguments=orjson.dumps(schedule.arguments) if mode == "fire" else b"",
            expires_at=now + spec.expires if spec is not None and spec.expires is not None else None,
            **tracing.record_ids()))
        verdict = self.scripts(scripts.fire(
            schedule.schedule_id, expected=score, next_due=next_due,
            tick=ms(tick) if tick is not None else None, mode=mode, last_task_id=schedule.last_task_id,
            problem=problem, run=run))
        return verdict, message

    def has_worker(self, schedule: ScheduleRecord) -> bool:
        """True when this worker or a live one has the schedule's task."""
        if schedule.celery_name in self.own_tasks:
            return True
        if time.monotonic() - self._live_read > WORKERS_VIEW_TTL:
            self._live_tasks = {name for beat in heartbeats(self.client).values() for name in beat.tasks}
            self._live_read = time.monotonic()
        return schedule.celery_name in self._live_tasks

    def _publish(self, schedule: ScheduleRecord, message: Message) -> None:
        """Send a fired run through a broker other than the records' Redis; a run that cannot be
        sent ends ``failed`` (it will not run)."""
        try:
            publish_blocking(self.app, message.queue, message.parts, self.settings.backend_timeout)
        except Exception as exc:
            log.error("schedule %s: its run %s could not be sent (%s)", schedule.schedule_id, message.task_id,
                      exc)
            error = {"type": "BrokerUnavailable", "message": f"the broker did not take the run: {exc}",
                     "retryable": True}
            moved = self.scripts(scripts.refused(message.task_id, schedule.owner or ANONYMOUS,
                                                 now=time.time(), ttl=self.settings.failure_ttl,
                                                 error=orjson.dumps(error)))
            if not moved.changed:
                log.warning("schedule %s: its unsent run %s was not ended failed: its record is %s",
                            schedule.schedule_id, message.task_id, moved.state or "gone")


def sync_declared(client: Redis, settings: Settings, catalogue: dict[str, TaskSpec], now: float | None = None,
                  ) -> tuple[list[str], list[str]]:
    """Create or update the schedules declared in ``catalogue``; remove the declared schedules
    of the same modules whose declaration is gone. (changed ids, removed ids)."""
    now = time.time() if now is None else now
    run = scripts.Scripts(client)
    changed: list[str] = []
    modules = {spec.func.__module__ for spec in catalogue.values()}
    wanted = {declared_id(spec.name): spec for spec in catalogue.values() if spec.schedule is not None}
    for schedule_id, spec in wanted.items():
        assert spec.schedule is not None
        digest = declared_digest(spec)
        stored = cast(bytes | None, client.hget(keys.schedule(schedule_id), "digest"))
        if stored is not None and stored.decode() == digest:
            continue
        timing = spec.schedule
        fields: dict[str, scripts.Arg] = {
            **definition(timing), "name": spec.name, "task": spec.name, "celery_name": spec.celery_name,
            "queue": spec.queue or settings.default_queue, "arguments": orjson.dumps(timing.arguments),
            "owner": ANONYMOUS, "declared": spec.func.__module__, "digest": digest, "anchor": ms(now),
            "problem": ""}
        said = run(scripts.schedule_put(schedule_id, ANONYMOUS, mode="upsert", limit=0, now=now,
                                        next_due=ms(timing.next_after(now, now)),
                                        enabled=True if stored is None else None, fields=fields))
        changed.append(schedule_id)
        log.info("declared schedule %s %s: %s", schedule_id, said, timing.describe())
    removed: list[str] = []
    for raw in cast(list[bytes], client.zrange(keys.SCHEDULES, 0, -1)):
        schedule_id = raw.decode()
        if not schedule_id.startswith("declared-") or schedule_id in wanted:
            continue
        module = cast(bytes | None, client.hget(keys.schedule(schedule_id), "declared"))
        if module is not None and module.decode() in modules:
            remove(client, schedule_id, ANONYMOUS)
            removed.append(schedule_id)
            log.info("declared schedule %s removed: its declaration is gone from %s", schedule_id,
                     module.decode())
    return changed, removed


def remove(client: Redis, schedule_id: str, owner: str) -> None:
    """Delete a schedule and its indexes (its runs stay, as tasks)."""
    pipe = client.pipeline(transaction=True)
    drop(pipe, schedule_id, owner)
    pipe.execute()

"""Schedules as the API, the CLI and a library user manage them: create, list, read, change,
pause, resume, run now, delete. Owner-scoped like tasks (an admin sees all; another owner's
schedule reads as unknown). Firing is the workers' (``worker.scheduler``)."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import orjson

from .. import tracing, validation
from ..auth import Caller
from ..constants import ANONYMOUS
from ..exceptions import (
    BackendUnavailable,
    Conflict,
    InvalidArguments,
    QuotaExceeded,
    TaskNotFound,
    UnknownTask,
)
from ..records import TaskRecord, keys, scripts
from ..records.schedules import ScheduleRecord, decode, definition, drop
from ..registry import TaskSpec
from ..schedule import Catchup, Overlap, Timing
from .dispatch import Message, schedule_link
from .reads import Reader
from .submit import SYSTEM, Submitter, _not_queued, _unknown

log = logging.getLogger("taskgate.schedules")

#: Recent runs shown with a schedule.
RECENT_RUNS = 10
#: The longest schedule name.
MAX_NAME = 200


def ms(seconds: float) -> int:
    """Epoch seconds as the integer ms schedules are scored with."""
    return round(seconds * 1000)


def _check_name(name: str | None) -> str | None:
    """``name`` if it is 1 to MAX_NAME characters of valid Unicode, else InvalidArguments."""
    if name is None:
        return None
    if not 0 < len(name) <= MAX_NAME:
        raise InvalidArguments(f"name: give 1 to {MAX_NAME} characters")
    try:
        name.encode()
    except UnicodeEncodeError:
        raise InvalidArguments("name: not valid Unicode (a lone surrogate)") from None
    return name


def _json(arguments: dict[str, Any]) -> bytes:
    """The arguments as stored and sent: portable JSON, else InvalidArguments."""
    try:
        return orjson.dumps(arguments)
    except orjson.JSONEncodeError as exc:
        raise InvalidArguments(f"arguments must travel as portable JSON: integers within 64 bits, strings "
                               f"of valid Unicode ({exc})") from None


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A schedule with its recent runs (newest first)."""

    schedule: ScheduleRecord
    runs: list[TaskRecord]


class Schedules:
    """Schedules over the records' Redis; every call runs under the backend's deadline."""

    def __init__(self, submitter: Submitter, reader: Reader, catalogue: dict[str, TaskSpec]) -> None:
        self.submitter, self.reader, self.catalogue = submitter, reader, catalogue
        self.backend = submitter.backend
        self.settings = submitter.settings

    def _spec(self, task: str) -> TaskSpec:
        spec = self.catalogue.get(task)
        if spec is None:
            raise UnknownTask(task)
        return spec

    def _validated(self, task: str, arguments: dict[str, Any]) -> tuple[TaskSpec, dict[str, Any]]:
        """The task's spec and its arguments as JSON, checked by the one validator (as a
        submit's: ``InvalidArguments`` naming each ``argument``)."""
        spec = self._spec(task)
        return spec, validation.arguments(spec.args_model, arguments).model_dump(mode="json")

    async def create(self, task: str, arguments: dict[str, Any] | None = None, *, cron: str | None = None,
                     every: float | None = None, timezone: str = "UTC", name: str | None = None,
                     overlap: Overlap = "allow", catchup: Catchup = "none", enabled: bool = True,
                     caller: Caller = SYSTEM) -> ScheduleRecord:
        """A new schedule running ``task`` with ``arguments`` at the times of ``cron`` (in
        ``timezone``) or ``every`` so many seconds; ``QuotaExceeded`` past the owner's limit."""
        timing = Timing(cron=cron, every=every, timezone=timezone, overlap=overlap, catchup=catchup)
        spec, kwargs = self._validated(task, arguments or {})
        _check_name(name)
        schedule_id = str(uuid.uuid4())
        now = time.time()
        fields: dict[str, scripts.Arg] = {
            **definition(timing), "name": name or "", "task": task,  # no name: shown from its timing
            "celery_name": spec.celery_name, "queue": spec.queue or self.settings.default_queue,
            "arguments": _json(kwargs), "owner": caller.owner, "anchor": ms(now)}
        created = tracing.traceparent()  # the span creating it: its runs link to it
        if created:
            fields["traceparent"] = created
        limit = self.settings.max_schedules
        async with self.backend.deadline():
            said = await self.backend.scripts(scripts.schedule_put(
                schedule_id, caller.owner, mode="create", limit=limit, now=now,
                next_due=ms(timing.next_after(now, now)), enabled=enabled, fields=fields))
        if said == "#limit":
            raise QuotaExceeded(f"{caller.owner} has {limit} schedules, the most allowed "
                                "(TASKGATE_MAX_SCHEDULES); delete one first", retry_after=60)
        return await self.get(schedule_id, caller)

    async def _read(self, schedule_id: str) -> ScheduleRecord | None:
        raw = await self.backend.redis.hgetall(keys.schedule(schedule_id))
        return decode(schedule_id, cast(dict[bytes, bytes], raw)) if raw else None

    async def get(self, schedule_id: str, caller: Caller = SYSTEM) -> ScheduleRecord:
        """The schedule, or ``TaskNotFound`` (unknown, or another owner's)."""
        async with self.backend.deadline():
            schedule = await self._read(schedule_id)
        if schedule is None or not caller.may_see(schedule.owner):
            raise TaskNotFound(schedule_id, "schedule")
        return schedule

    async def view(self, schedule_id: str, caller: Caller = SYSTEM) -> ScheduleView:
        """The schedule and its recent runs."""
        schedule = await self.get(schedule_id, caller)
        async with self.backend.deadline():
            ids = [raw.decode() for raw in cast(list[bytes], await self.backend.redis.zrevrange(
                keys.runs(schedule_id), 0, RECENT_RUNS - 1))]
            records = await self.reader.many(ids)
        return ScheduleView(schedule, [record for record in records if record is not None])

    async def list(self, caller: Caller = SYSTEM, limit: int = 100,
                   offset: int = 0) -> tuple[list[ScheduleRecord], int | None]:
        """The caller's schedules (every one for an admin), oldest first, from ``offset``; a page
        and the offset of the next one (None after the last)."""
        index = keys.SCHEDULES if caller.admin else keys.owner_schedules(caller.owner)
        async with self.backend.deadline():
            members = cast(list[bytes], await self.backend.redis.zrange(index, offset, offset + limit - 1))
            pipe = self.backend.redis.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(keys.schedule(member.decode()))
            raws = await pipe.execute()
        found = [decode(member.decode(), raw) for member, raw in zip(members, raws, strict=True) if raw]
        return found, (offset + limit if len(members) == limit else None)

    async def update(self, schedule_id: str, caller: Caller = SYSTEM, *, cron: str | None = None,
                     every: float | None = None, timezone: str | None = None,
                     arguments: dict[str, Any] | None = None, overlap: Overlap | None = None,
                     catchup: Catchup | None = None, name: str | None = None) -> ScheduleRecord:
        """Change a schedule; its next tick is computed again from now. A schedule declared in
        code is changed in code (``Conflict``)."""
        schedule = await self.get(schedule_id, caller)
        if schedule.declared:
            raise Conflict(f"schedule {schedule_id} is declared in code ({schedule.declared}); change the "
                           "declaration there (workers apply it when they start)")
        if cron is not None and every is not None:
            raise InvalidArguments("give either cron or every (seconds), not both")
        timing = Timing(
            cron=cron if cron is not None else (None if every is not None else schedule.cron),
            every=every if every is not None else (None if cron is not None else schedule.every),
            timezone=timezone or schedule.timezone, overlap=overlap or schedule.overlap,  # type: ignore[arg-type]
            catchup=catchup or schedule.catchup)  # type: ignore[arg-type]
        fields: dict[str, scripts.Arg] = dict(definition(timing))
        if arguments is not None:
            _, kwargs = self._validated(schedule.task or "", arguments)
            fields["arguments"] = _json(kwargs)
        if name is not None:
            fields["name"] = _check_name(name) or name
        now = time.time()
        if cron is None and every is None and timezone is None:  # same timing: same ticks
            anchor = schedule.anchor.timestamp() if schedule.anchor else now
        else:
            anchor = now
            fields["anchor"] = ms(now)
        await self._put(schedule, "update", now, ms(timing.next_after(now, anchor)), None, fields)
        return await self.get(schedule_id, caller)

    async def pause(self, schedule_id: str, caller: Caller = SYSTEM) -> ScheduleRecord:
        """Stop firing until resumed (its runs in progress go on)."""
        schedule = await self.get(schedule_id, caller)
        await self._put(schedule, "update", time.time(), None, False, {})
        return await self.get(schedule_id, caller)

    async def resume(self, schedule_id: str, caller: Caller = SYSTEM) -> ScheduleRecord:
        """Fire again, from the first tick after now (nothing missed while paused fires)."""
        schedule = await self.get(schedule_id, caller)
        now = time.time()
        anchor = schedule.anchor.timestamp() if schedule.anchor else now
        await self._put(schedule, "update", now, ms(schedule.timing().next_after(now, anchor)), True, {})
        return await self.get(schedule_id, caller)

    async def _put(self, schedule: ScheduleRecord, mode: scripts.PutMode, now: float, next_due: int | None,
                   enabled: bool | None, fields: dict[str, scripts.Arg]) -> None:
        async with self.backend.deadline():
            said = await self.backend.scripts(scripts.schedule_put(
                schedule.schedule_id, schedule.owner or ANONYMOUS, mode=mode, limit=0, now=now,
                next_due=next_due, enabled=enabled, fields=fields))
        if said == "#missing":
            raise TaskNotFound(schedule.schedule_id, "schedule")

    async def _fire_now(self, call: scripts.Call[str]) -> str:
        async with self.backend.deadline():
            return await self.backend.scripts(call)

    async def run_now(self, schedule_id: str, caller: Caller = SYSTEM) -> str:
        """Queue one run now, outside the schedule (its ticks are unchanged); the run's task id.
        Traced, as a submit is (the current span's child), linked to the schedule
        (``dispatch.schedule_link``)."""
        for _ in range(3):  # 'stale': a tick fired meanwhile; read the schedule again
            schedule = await self.get(schedule_id, caller)
            spec = self._spec(schedule.task or "")
            task_id = str(uuid.uuid4())
            owner = schedule.owner or ANONYMOUS
            queue = schedule.queue or self.settings.default_queue
            with tracing.producer_span(spec.name, task_id, queue, owner=owner,
                                       links=[schedule_link(schedule_id, schedule.traceparent)]):
                tracing.annotate(taskgate__schedule__id=schedule_id)
                message, said = await self._run_now(schedule, spec, task_id, owner, queue)
            if said == "stale":
                continue
            if said == "taken":
                raise TaskNotFound(schedule_id, "schedule")
            if said.startswith("#rate") or said == "#inflight":
                raise QuotaExceeded(f"{owner}'s quota refused the run ({said[1:]})", retry_after=1)
            if said == "#late":
                raise BackendUnavailable("redis", _not_queued(task_id, "it reached Redis after the deadline"),
                                         task_id, outcome="not_queued")
            if said == "fired-out":
                await self._publish(message.queue, message.parts, task_id, owner)
            return task_id
        raise Conflict(f"schedule {schedule_id} kept firing while a run was being queued; try again")

    async def _run_now(self, schedule: ScheduleRecord, spec: TaskSpec, task_id: str, owner: str,
                       queue: str) -> tuple[Message, str]:
        """Run ``fire.lua`` for a run now: the run's message and the script's verdict."""
        dispatcher = self.submitter.dispatcher
        message = dispatcher.message(spec.celery_name, task_id, schedule.arguments, queue=queue, owner=owner,
                                     delivery_tag=task_id)
        now = time.time()
        cutoff = await self.submitter._cutoff(task_id)  # the run is refused after the deadline
        run = dispatcher.enqueue(message, spec.name, spec, schedule.arguments, scripts.Enqueue(
            task_id, spec.name, now=now, owner=owner, ttl=self.settings.result_ttl,
            horizon=now - max(self.settings.result_ttl, self.settings.failure_ttl), message=b"",
            queue=None, rate_limit=self.settings.submit_rate, inflight_limit=self.settings.max_in_flight,
            deadline=cutoff, arguments=_json(schedule.arguments),
            expires_at=now + spec.expires if spec.expires is not None else None, **tracing.record_ids()))
        try:
            said = await self._fire_now(scripts.fire(
                schedule.schedule_id, expected=0, next_due=0, tick=None, mode="now",
                last_task_id=schedule.last_task_id, run=run))
        except BackendUnavailable as exc:  # sent, maybe run: only a read of the task can tell
            raise _unknown(task_id, exc.detail) from exc
        return message, said

    async def _publish(self, queue: str, parts: Any, task_id: str, owner: str) -> None:
        """Send a run now through a broker other than the records' Redis; a run the broker did
        not take ends ``failed`` (it will not run), and the caller gets ``Unavailable``."""
        try:
            async with self.backend.deadline("broker"):
                await self.submitter.broker.publish(queue, parts)
        except BackendUnavailable as exc:
            error = {"type": "BrokerUnavailable", "message": f"the broker did not take the run: {exc.detail}",
                     "retryable": True}
            async with self.backend.deadline():
                moved = await self.backend.scripts(scripts.refused(
                    task_id, owner, now=time.time(), ttl=self.settings.failure_ttl,
                    error=orjson.dumps(error)))
            if not moved.changed:
                log.warning("unsent run %s: not ended failed: its record is %s", task_id,
                            moved.state or "gone")
            raise BackendUnavailable("broker", f"{exc.detail}: the run {task_id} was not queued and will "
                                     "never run (it ended failed)", task_id) from exc

    async def delete(self, schedule_id: str, caller: Caller = SYSTEM) -> None:
        """Delete a schedule (its runs stay, as tasks). A schedule declared in code is removed
        from the code (``Conflict``): pause it meanwhile."""
        schedule = await self.get(schedule_id, caller)
        if schedule.declared:
            raise Conflict(f"schedule {schedule_id} is declared in code ({schedule.declared}); remove the "
                           "declaration (a worker starting without it deletes it), or pause it")
        async with self.backend.deadline():
            pipe = self.backend.redis.pipeline(transaction=True)
            drop(pipe, schedule_id, schedule.owner or ANONYMOUS)
            await pipe.execute()

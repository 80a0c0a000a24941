"""Reading tasks: one record, many, the history, the dead letters; and waiting for changes.

Waiting subscribes to the task's events channel first and reads the record second, so no
change can slip between the two; it is woken by the workers' events, never by polling.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import EllipsisType
from typing import cast

from ..auth import Caller
from ..constants import ANONYMOUS
from ..exceptions import Forbidden, TaskNotFound
from ..records import TaskRecord, decode, decode_event, keys
from ..states import TaskState
from .backend import Backend
from .submit import SYSTEM
from .subscriptions import Subscription, Subscriptions

#: Index batches one history call scans at most (a rare filter returns a short page and a
#: cursor to continue from rather than walking the whole index).
HISTORY_BATCHES = 20

#: Half a millisecond, in seconds (see :meth:`Reader.history`).
HALF_MS = 0.0005


class Reader:
    """Reads and waits; every call runs under the backend's deadline."""

    def __init__(self, backend: Backend, subscriptions: Subscriptions) -> None:
        self.backend = backend
        self.subscriptions = subscriptions

    async def get(self, task_id: str, caller: Caller = SYSTEM) -> TaskRecord:
        """The task's record, or ``TaskNotFound`` (also when ``caller`` may not see it: ids of
        other owners' tasks must not leak)."""
        async with self.backend.deadline():
            raw = await self.backend.redis.hgetall(keys.record(task_id))
        record = decode(task_id, raw) if raw else None
        if record is None or not caller.may_see(record.owner):
            raise TaskNotFound(task_id)
        return record

    async def many(self, task_ids: list[str]) -> list[TaskRecord | None]:
        """The records of ``task_ids`` in one round trip (None where there is none)."""
        async with self.backend.deadline():
            return await self._fetch(task_ids)

    async def _fetch(self, task_ids: list[str]) -> list[TaskRecord | None]:
        pipe = self.backend.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hgetall(keys.record(task_id))
        raws = await pipe.execute()
        return [decode(task_id, raw) if raw else None for task_id, raw in zip(task_ids, raws, strict=True)]

    async def wait_many(self, task_ids: list[str], seconds: float,
                        caller: Caller = SYSTEM) -> list[TaskRecord | None]:
        """The records of ``task_ids`` once all have ended or ``seconds`` passed (None for an id
        the caller cannot see)."""
        deadline = time.monotonic() + seconds
        async with contextlib.AsyncExitStack() as stack:
            subscription = None
            if seconds > 0:
                async with self.backend.deadline():
                    subscription = await stack.enter_async_context(self.subscriptions(
                        *(keys.events(task_id) for task_id in task_ids), owner=caller.owner))
            records = {task_id: record if record and caller.may_see(record.owner) else None
                       for task_id, record in zip(task_ids, await self.many(task_ids), strict=True)}
            pending = {task_id for task_id, record in records.items()
                       if record is not None and not record.ended}
            while subscription is not None and pending and (remaining := deadline - time.monotonic()) > 0:
                message = await subscription.get(remaining)
                if message is None:
                    continue
                task_id = keys.task_of_channel(message[0])
                if task_id not in pending:
                    continue
                changed = decode_event(task_id, message[1])
                if changed.newer_than(records[task_id]):
                    records[task_id] = changed
                    if changed.ended:
                        pending.discard(task_id)
            return [records[task_id] for task_id in task_ids]

    @asynccontextmanager
    async def watch(self, task_id: str,
                    caller: Caller = SYSTEM) -> AsyncIterator[tuple[TaskRecord, Subscription]]:
        """Subscribe to the task's changes (confirmed by Redis), then read its record:
        ``(record, subscription)``. Counted against the caller's and the process's limits on
        waits (``QuotaExceeded``, ``BackendUnavailable``)."""
        async with contextlib.AsyncExitStack() as stack:
            async with self.backend.deadline():
                subscription = await stack.enter_async_context(
                    self.subscriptions(keys.events(task_id), owner=caller.owner))
            yield await self.get(task_id, caller), subscription

    @staticmethod
    async def next_change(task_id: str, subscription: Subscription,
                          timeout: float) -> TaskRecord | None:  # noqa: ASYNC109
        """The record after its next change, or None if nothing changed within ``timeout``;
        ``BackendUnavailable`` if the events connection broke."""
        message = await subscription.get(timeout)
        if message is None or message[0] != keys.events(task_id):
            return None
        return decode_event(task_id, message[1])

    async def wait(self, task_id: str, seconds: float, caller: Caller = SYSTEM) -> TaskRecord:
        """The record once ended, or as it is after ``seconds``."""
        deadline = time.monotonic() + seconds
        async with self.watch(task_id, caller) as (record, subscription):
            while not record.ended:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                changed = await self.next_change(task_id, subscription, remaining)
                if changed is not None and changed.newer_than(record):
                    record = changed
            return record

    async def history(self, *, state: TaskState | None, name: str | None, limit: int, before: float | None,
                      caller: Caller = SYSTEM, schedule_id: str | None = None, owner: str | None = None,
                      since: float | None = None, until: float | None = None,
                      ) -> tuple[list[TaskRecord], float | None]:
        """Tasks newest first (the caller's own unless admin), filtered (``schedule_id``: the
        runs of that schedule; ``owner``: that owner's, ``Forbidden`` for another's unless
        admin; ``since``/``until``: submitted at or after, before, in epoch seconds); a
        page and the cursor of the next one."""
        if owner is not None and not caller.may_see(owner):
            raise Forbidden("only an admin key may list another owner's tasks")
        found: list[TaskRecord] = []
        # The index holds submission times as submitted; records show them in whole ms, and
        # since/until compare with what records show: half a ms earlier on the index.
        bounds = [bound for bound in (before, None if until is None else until - HALF_MS)
                  if bound is not None]
        upper = f"({min(bounds)!r}" if bounds else "+inf"  # both exclusive
        lower = "-inf" if since is None else repr(since - HALF_MS)
        last: float | None = None
        if schedule_id is not None:
            index = keys.runs(schedule_id)
        elif not caller.admin:
            index = keys.owner_index(caller.owner)
        elif owner is not None and owner != ANONYMOUS:
            index = keys.owner_index(owner)
        else:
            index = keys.INDEX
        wanted_owner = None if owner == ANONYMOUS else owner
        async with self.backend.deadline():  # one deadline for the whole page
            for _ in range(HISTORY_BATCHES):
                batch = cast(list[tuple[bytes, float]], await self.backend.redis.zrevrangebyscore(
                    index, upper, lower, start=0, num=limit, withscores=True))
                if not batch:
                    return found, None
                ids = [member.decode() for member, _ in batch]
                if state is not None or name is not None or owner is not None:
                    ids = await self._matching(ids, state, name, wanted_owner if owner is not None else ...)
                fetched = dict(zip(ids, await self._fetch(ids), strict=True))
                records = [fetched.get(member.decode()) for member, _ in batch]
                for (_member, score), record in zip(batch, records, strict=True):
                    last, upper = score, f"({score!r}"
                    if record is None:
                        continue  # expired or forgotten; the index is trimmed lazily
                    if ((state is not None and record.state != state)
                            or (name is not None and record.name != name)
                            or (owner is not None and record.owner != wanted_owner)
                            or not caller.may_see(record.owner)):
                        continue
                    found.append(record)
                    if len(found) == limit:
                        return found, score
        return found, last

    async def _matching(self, task_ids: list[str], state: TaskState | None, name: str | None,
                        owner: str | None | EllipsisType) -> list[str]:
        """The ids whose record has that state, name and owner (``...``: any owner), read from
        three fields each rather than whole records: a rare filter reads much history."""
        pipe = self.backend.redis.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hmget(keys.record(task_id), "state", "name", "owner")
        heads = cast(list[list[bytes | None]], await pipe.execute())
        want_state = None if state is None else state.value.encode()
        want_name = None if name is None else name.encode()
        want_owner = None if owner is None or owner is ... else owner.encode()
        return [task_id for task_id, (has_state, has_name, has_owner) in zip(task_ids, heads, strict=True)
                if (want_state is None or has_state == want_state)
                and (want_name is None or has_name == want_name)
                and (owner is ... or has_owner == want_owner)]

    async def dead_letters(self, limit: int, before: float | None,
                           caller: Caller = SYSTEM) -> tuple[list[tuple[TaskRecord, float]], float | None]:
        """Dead-lettered tasks (the caller's own unless admin) newest first, each with the time
        it became one; a page and the cursor of the next one."""
        upper = "+inf" if before is None else f"({before!r}"
        async with self.backend.deadline():
            batch = cast(list[tuple[bytes, float]], await self.backend.redis.zrevrangebyscore(
                keys.DEAD, upper, "-inf", start=0, num=limit, withscores=True))
            records = await self._fetch([member.decode() for member, _ in batch])
        found = [(record, score) for (_member, score), record in zip(batch, records, strict=True)
                 if record is not None and caller.may_see(record.owner)]
        return found, (batch[-1][1] if len(batch) == limit else None)

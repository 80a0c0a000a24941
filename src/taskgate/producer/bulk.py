"""Acting on many tasks at once: cancel, replay, and the dead letters' requeue and drop, on up
to :data:`MAX_BULK` ids or on the caller's tasks a filter selects. Each item gets its own
outcome; one that fails does not stop the others."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from ..auth import Caller
from ..exceptions import (
    BackendUnavailable,
    Conflict,
    InvalidArguments,
    QuotaExceeded,
    TaskGateError,
    TaskNotFound,
    UnknownTask,
)
from ..states import TaskState
from .control import Control
from .reads import Reader
from .submit import SYSTEM

#: The most tasks one bulk request acts on.
MAX_BULK = 1000
#: History pages of 100 a filter reads, at most.
SCAN_PAGES = 100
#: Items acted on at once (each is a Redis round trip or two).
CONCURRENCY = 32

#: The error type each failure is reported as (as the API's envelope names it).
ERROR_TYPES: dict[type[TaskGateError], tuple[str, bool]] = {
    TaskNotFound: ("task_not_found", False), Conflict: ("conflict", False),
    UnknownTask: ("unknown_task", False), InvalidArguments: ("invalid_request", False),
    QuotaExceeded: ("quota_exceeded", True), BackendUnavailable: ("backend_unavailable", True),
}


@dataclass(frozen=True, slots=True)
class Selection:
    """Which of the caller's tasks a filter selects (newest first, at most MAX_BULK)."""

    state: TaskState | None = None
    name: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one item: ``state`` (cancel), ``new_task_id`` (replay), or ``error``
    (its envelope type, message and whether retrying may help)."""

    task_id: str
    state: TaskState | None = None
    new_task_id: str | None = None
    error: tuple[str, str, bool] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def error_type(exc: TaskGateError) -> tuple[str, bool]:
    """The envelope's type of ``exc`` in an item's place (as the API answers it alone), and
    whether retrying may help."""
    return next((found for cls, found in ERROR_TYPES.items() if isinstance(exc, cls)), ("error", False))


def _failed(task_id: str, exc: TaskGateError) -> Outcome:
    kind, retryable = error_type(exc)
    return Outcome(task_id, error=(kind, str(exc), retryable))


class Bulk:
    """Bulk actions over :class:`.Control`."""

    def __init__(self, control: Control, reader: Reader) -> None:
        self.control, self.reader = control, reader

    async def select(self, selection: Selection, caller: Caller = SYSTEM) -> list[str]:
        """The ids of the caller's tasks ``selection`` matches, newest first, at most MAX_BULK,
        among the newest SCAN_PAGES hundred pages of the history."""
        found: list[str] = []
        before = selection.until.timestamp() if selection.until else None
        since = selection.since.timestamp() if selection.since else None
        for _ in range(SCAN_PAGES):  # a filter that matches little does not walk the whole history
            page, before = await self.reader.history(state=selection.state, name=selection.name, limit=100,
                                                     before=before, caller=caller)
            for record in page:
                created = record.created_at.timestamp() if record.created_at else None
                if since is not None and created is not None and created < since:
                    return found
                found.append(record.task_id)
            if len(found) >= MAX_BULK or before is None or (since is not None and before < since):
                break
        return found[:MAX_BULK]

    async def _each(self, task_ids: list[str], act: Callable[[str], Awaitable[Outcome]]) -> list[Outcome]:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(task_id: str) -> Outcome:
            async with gate:
                try:
                    return await act(task_id)
                except TaskGateError as exc:
                    return _failed(task_id, exc)

        unique = list(dict.fromkeys(task_ids))  # each id acted on once, in the order given
        return list(await asyncio.gather(*(one(task_id) for task_id in unique)))

    async def cancel(self, task_ids: list[str], terminate: bool = False,
                     caller: Caller = SYSTEM) -> list[Outcome]:
        async def act(task_id: str) -> Outcome:
            record = await self.control.cancel(task_id, terminate=terminate, caller=caller)
            return Outcome(task_id, state=record.state)
        return await self._each(task_ids, act)

    async def replay(self, task_ids: list[str], caller: Caller = SYSTEM) -> list[Outcome]:
        async def act(task_id: str) -> Outcome:
            submission = await self.control.replay(task_id, caller)
            return Outcome(task_id, state=TaskState.QUEUED, new_task_id=submission.task_id)
        return await self._each(task_ids, act)

    async def requeue(self, task_ids: list[str], caller: Caller = SYSTEM) -> list[Outcome]:
        async def act(task_id: str) -> Outcome:
            record = await self.control.requeue(task_id, caller)
            return Outcome(task_id, state=record.state)
        return await self._each(task_ids, act)

    async def drop(self, task_ids: list[str], caller: Caller = SYSTEM) -> list[Outcome]:
        async def act(task_id: str) -> Outcome:
            await self.control.drop(task_id, caller)
            return Outcome(task_id)
        return await self._each(task_ids, act)

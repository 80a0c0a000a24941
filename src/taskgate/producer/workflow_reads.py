"""Reading workflows: a page of them, newest first, and following one as it changes.

Following one subscribes to its events channel first and reads its hash second (as
``Reader.watch`` does for a task), so no change slips between the two; it shares the process's
one pub/sub connection and its limits on waits (``subscriptions``), and is woken by the
scripts that change the workflow, never by polling.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, cast

import orjson

from ..auth import Caller
from ..constants import ANONYMOUS
from ..exceptions import Forbidden
from ..records import keys
from ..records.workflows import SUMMARY_FIELDS, WorkflowRecord, WorkflowState, WorkflowSummary, decode_summary
from .backend import Backend
from .reads import HISTORY_BATCHES
from .subscriptions import Subscription, Subscriptions


class WorkflowReads:
    """The reading half of :class:`.Workflows` (which supplies ``get``)."""

    backend: Backend
    subscriptions: Subscriptions

    if TYPE_CHECKING:
        async def get(self, workflow_id: str, caller: Caller) -> WorkflowRecord: ...

    async def history(self, caller: Caller, *, state: WorkflowState | None = None, name: str | None = None,
                      owner: str | None = None, limit: int = 20, before: float | None = None,
                      ) -> tuple[list[WorkflowSummary], float | None]:
        """Workflows newest first (the caller's own unless admin), filtered by ``state``,
        ``name`` and ``owner`` (another owner's: admins only, else ``Forbidden``; ``anonymous``:
        those submitted while auth was off); a page and the cursor of the next one (submission
        times, exclusive, as ``Reader.history``'s). A rare filter may return a short page with a
        cursor: it reads at most ``HISTORY_BATCHES`` pages' worth of the index."""
        if owner is not None and not caller.may_see(owner):
            raise Forbidden("only an admin key may list another owner's workflows")
        if not caller.admin:
            index = keys.owner_workflows(caller.owner)
        elif owner is not None and owner != ANONYMOUS:
            index = keys.owner_workflows(owner)
        else:
            index = keys.WORKFLOW_INDEX
        wanted_owner = None if owner == ANONYMOUS else owner
        upper = "+inf" if before is None else f"({before!r}"
        found: list[WorkflowSummary] = []
        last: float | None = None
        async with self.backend.deadline():  # one deadline for the whole page
            for _ in range(HISTORY_BATCHES):
                batch = cast(list[tuple[bytes, float]], await self.backend.redis.zrevrangebyscore(
                    index, upper, "-inf", start=0, num=limit, withscores=True))
                if not batch:
                    return found, None
                pipe = self.backend.redis.pipeline(transaction=False)
                for member, _ in batch:
                    pipe.hmget(keys.workflow(member.decode()), *SUMMARY_FIELDS)
                replies = await pipe.execute()
                for (member, score), values in zip(batch, replies, strict=True):
                    last, upper = score, f"({score!r}"
                    summary = decode_summary(member.decode(), values)
                    if (summary is None  # expired; the index is trimmed lazily
                            or (state is not None and summary.state != state)
                            or (name is not None and summary.name != name)
                            or (owner is not None and summary.owner != wanted_owner)
                            or not caller.may_see(summary.owner)):
                        continue
                    found.append(summary)
                    if len(found) == limit:
                        return found, score
        return found, last

    @asynccontextmanager
    async def watch(self, workflow_id: str,
                    caller: Caller) -> AsyncIterator[tuple[WorkflowRecord, Subscription]]:
        """Subscribe to the workflow's changes (confirmed by Redis), then read it: ``(workflow,
        subscription)``; ``WorkflowNotFound`` as :meth:`get`. Counted against the caller's and
        the process's limits on waits (``QuotaExceeded``, ``BackendUnavailable``)."""
        async with contextlib.AsyncExitStack() as stack:
            async with self.backend.deadline():
                subscription = await stack.enter_async_context(
                    self.subscriptions(keys.workflow_events(workflow_id), owner=caller.owner))
            yield await self.get(workflow_id, caller), subscription

    @staticmethod
    async def next_change(workflow_id: str, subscription: Subscription,
                          timeout: float) -> int | None:  # noqa: ASYNC109
        """The ``seq`` of the workflow's next change, or None if none came within ``timeout``;
        ``BackendUnavailable`` if the events connection broke. Changes are announced, not sent:
        read the workflow again for what it is now."""
        message = await subscription.get(timeout)
        if message is None or message[0] != keys.workflow_events(workflow_id):
            return None
        seq = orjson.loads(message[1]).get("seq")
        return seq if isinstance(seq, int) else None

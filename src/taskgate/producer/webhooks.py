"""Webhook subscriptions as the API (and a library user) manage them: create, list, read, change,
rotate the secret, delete. Owner-scoped like schedules: an owner's subscriptions hear its own
runs and workflows; an admin sees every subscription and may make one that hears every owner's
(``all_owners``); another owner's subscription reads as unknown.

Deliveries are written by the scripts that end runs and workflows (``records/scripts/webhooks.lua``)
and sent by workers' keepers. A secret leaves this module only in the :class:`Subscription`
returned by :meth:`Webhooks.create` and :meth:`Webhooks.rotate_secret`; nothing here logs one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import orjson

from ..auth import Caller
from ..constants import ANONYMOUS
from ..exceptions import FieldError, Forbidden, InvalidArguments, TaskNotFound
from ..records import keys, webhooks
from ..records.model import stamp
from ..records.scripts import Arg
from ..records.webhooks import EVENTS, MAX_PER_OWNER, PREVIOUS_SECRET_VALID, Subscription
from ..webhooks_guard import check_url
from .backend import Backend
from .submit import SYSTEM

#: The longest description, and the most task names one subscription may list.
MAX_DESCRIPTION = 500
MAX_TASKS = 100
MAX_TASK_NAME = 200


class Unset:
    """The value of a change not asked for (``tasks=None`` means every task)."""


UNSET = Unset()


def _invalid(name: str, message: str) -> InvalidArguments:
    return InvalidArguments(f"{name}: {message}", [FieldError(("body", name), message)])


def check_events(events: Sequence[str]) -> tuple[str, ...]:
    """``events`` as stored (each once, in order), if each is one a subscription may name."""
    if not events:
        raise _invalid("events", f"name at least one of {', '.join(EVENTS)}")
    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        raise _invalid("events", f"no event {', '.join(map(repr, unknown))}: use {', '.join(EVENTS)}")
    return tuple(dict.fromkeys(events))


def check_tasks(tasks: Sequence[str] | None) -> tuple[str, ...] | None:
    """``tasks`` as stored (None: every task), if it is 1 to MAX_TASKS names."""
    if tasks is None:
        return None
    if not 0 < len(tasks) <= MAX_TASKS:
        raise _invalid("tasks", f"list 1 to {MAX_TASKS} task names, or null for every task")
    if any(not 0 < len(name) <= MAX_TASK_NAME for name in tasks):
        raise _invalid("tasks", f"each name has 1 to {MAX_TASK_NAME} characters")
    return tuple(dict.fromkeys(tasks))


def check_description(description: str) -> str:
    """``description``, if it is at most MAX_DESCRIPTION characters."""
    if len(description) > MAX_DESCRIPTION:
        raise _invalid("description", f"at most {MAX_DESCRIPTION} characters")
    return description


def _json(names: Sequence[str]) -> str:
    return orjson.dumps(list(names)).decode()


class Webhooks:
    """Webhook subscriptions over the records' Redis; every call runs under the backend's deadline."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.settings = backend.settings

    async def create(self, url: str, events: Sequence[str], tasks: Sequence[str] | None = None,
                     description: str = "", *, all_owners: bool = False,
                     caller: Caller = SYSTEM) -> Subscription:
        """A new subscription, its secret in it (shown this once). ``all_owners``: hear every
        owner's runs (admins only: ``Forbidden`` else). ``InvalidArguments`` (``UnsafeURL`` for
        the url) says what to fix; past :data:`~taskgate.records.webhooks.MAX_PER_OWNER`, too."""
        if all_owners and not caller.admin:
            raise Forbidden("all: only an admin API key may subscribe to every owner's events")
        subscription = Subscription(
            webhook_id=webhooks.new_id(), url=url, events=check_events(events), tasks=check_tasks(tasks),
            description=check_description(description),
            owner=None if caller.owner == ANONYMOUS else caller.owner, all_owners=all_owners,
            created_at=datetime.now(UTC), secret=webhooks.new_secret())
        await check_url(url, self.settings)
        async with self.backend.deadline():
            said = await self.backend.scripts(webhooks.put(
                subscription.webhook_id, subscription.owner, mode="create", limit=MAX_PER_OWNER,
                fields=webhooks.fields_of(subscription)))
        if said == "#limit":
            raise InvalidArguments(f"{caller.owner} has {MAX_PER_OWNER} webhooks, the most allowed: delete "
                                   "one first (one subscription may name several events and tasks)")
        return await self.get(subscription.webhook_id, caller)

    async def _read(self, webhook_id: str) -> Subscription | None:
        raw = await self.backend.redis.hgetall(keys.webhook(webhook_id))
        return webhooks.decode(webhook_id, cast(dict[bytes, bytes], raw)) if raw else None

    async def get(self, webhook_id: str, caller: Caller = SYSTEM) -> Subscription:
        """The subscription, or ``TaskNotFound`` (unknown, or another owner's)."""
        async with self.backend.deadline():
            found = await self._read(webhook_id)
        if found is None or not caller.may_see(found.owner or ANONYMOUS):
            raise TaskNotFound(webhook_id, "webhook")
        return found

    async def list(self, caller: Caller = SYSTEM, limit: int = 100,
                   offset: int = 0) -> tuple[list[Subscription], int | None]:
        """The caller's subscriptions (every one for an admin), oldest first, from ``offset``; a
        page and the offset of the next one (None after the last)."""
        index = keys.WEBHOOKS if caller.admin else keys.webhooks_of(caller.owner)
        async with self.backend.deadline():
            members = cast(set[bytes], await self.backend.redis.smembers(index))
            ids = sorted(member.decode() for member in members)
            pipe = self.backend.redis.pipeline(transaction=False)
            for webhook_id in ids:
                pipe.hgetall(keys.webhook(webhook_id))
            raws = await pipe.execute()
        decoded = (webhooks.decode(webhook_id, raw) for webhook_id, raw in zip(ids, raws, strict=True))
        found = [sub for sub in decoded if sub is not None]
        found.sort(key=lambda sub: (sub.created_at or datetime.min.replace(tzinfo=UTC), sub.webhook_id))
        page = found[offset:offset + limit]
        return page, (offset + limit if len(found) > offset + limit else None)

    async def update(self, webhook_id: str, caller: Caller = SYSTEM, *, url: str | None = None,
                     events: Sequence[str] | None = None, tasks: Sequence[str] | None | Unset = UNSET,
                     description: str | None = None, enabled: bool | None = None) -> Subscription:
        """Change what is given (``tasks=None``: every task). ``enabled=True`` clears why it was
        disabled and its failing streak: deliveries start again with the next event."""
        current = await self.get(webhook_id, caller)
        fields: dict[str, Arg] = {}
        drop: list[str] = []
        if events is not None:
            fields["events"] = _json(check_events(events))
        if not isinstance(tasks, Unset):
            checked = check_tasks(tasks)
            if checked is None:
                drop.append("tasks")
            else:
                fields["tasks"] = _json(checked)
        if description is not None:
            fields["description"] = check_description(description)
        if url is not None:
            await check_url(url, self.settings)
            fields["url"] = url
        if enabled is not None:
            fields["enabled"] = "1" if enabled else "0"
            if enabled:
                drop += ["disabled_reason", "failing_since"]
        await self._put(current, "update", fields, drop)
        return await self.get(webhook_id, caller)

    async def rotate_secret(self, webhook_id: str, caller: Caller = SYSTEM) -> Subscription:
        """A new secret (in the subscription returned, shown this once); deliveries are signed
        with the previous one too for :data:`~taskgate.records.webhooks.PREVIOUS_SECRET_VALID` s."""
        current = await self.get(webhook_id, caller)
        until = stamp(time.time() + PREVIOUS_SECRET_VALID)
        await self._put(current, "rotate", {"secret": webhooks.new_secret(), "previous_until": until}, [])
        return await self.get(webhook_id, caller)

    async def _put(self, current: Subscription, mode: webhooks.PutMode, fields: dict[str, Arg],
                   drop: Sequence[str]) -> None:
        async with self.backend.deadline():
            said = await self.backend.scripts(webhooks.put(current.webhook_id, current.owner, mode=mode,
                                                           fields=fields, drop=drop))
        if said == "#missing":
            raise TaskNotFound(current.webhook_id, "webhook")

    async def delete(self, webhook_id: str, caller: Caller = SYSTEM) -> None:
        """Delete a subscription: no event is written for it after this, and its deliveries not
        yet sent are dropped."""
        current = await self.get(webhook_id, caller)
        async with self.backend.deadline():
            listed = await self.backend.scripts(webhooks.drop(webhook_id, current.owner))
        if listed is None:
            raise TaskNotFound(webhook_id, "webhook")
        async with self.backend.deadline():
            pipe = self.backend.redis.pipeline(transaction=False)  # one key each: valid on a Cluster
            for key in listed:
                pipe.unlink(key)
            await pipe.execute()

"""Dead letters: tasks that exhausted their retries or deliveries; list, requeue, drop."""

from __future__ import annotations

import time
from typing import Any, cast

from . import store
from .auth import Caller
from .broker import RedisBroker, build_message, queue_for_priority
from .constants import DEAD_KEY, events_channel, task_record_key
from .exceptions import TaskNotFound
from .jobs import SYSTEM, Gateway


async def listing(gateway: Gateway, limit: int, before: float | None,
                  caller: Caller = SYSTEM) -> tuple[list[dict[str, Any]], float | None]:
    """Dead-lettered tasks (the caller's own unless admin), newest first; returns a page and
    the cursor of the next one."""
    upper = "+inf" if before is None else f"({before!r}"
    async with gateway.deadline():
        batch = cast(list[tuple[bytes, float]], await gateway.state.zrevrangebyscore(
            DEAD_KEY, upper, "-inf", start=0, num=limit, withscores=True))
        pipe = gateway.state.pipeline(transaction=False)
        for member, _score in batch:
            pipe.hgetall(task_record_key(member.decode()))
        raws = await pipe.execute()
    found = [{"task_id": member.decode(), "dead_at": score, **store.decode_record(raw)}
             for (member, score), raw in zip(batch, raws, strict=True) if raw]
    found = [record for record in found if caller.may_see(record.get("owner"))]
    return found, (batch[-1][1] if len(batch) == limit else None)

async def requeue(gateway: Gateway, task_id: str, caller: Caller = SYSTEM) -> dict[str, Any]:
    """Run a dead-lettered task again: same id and arguments, fresh attempt counts."""
    record = await gateway.get(task_id, caller)
    if "dead_reason" not in record:
        raise TaskNotFound(task_id, what="dead letter")
    spec = gateway.spec(record["name"])
    arguments = record.get("args") or {}
    queue = spec.queue or gateway.settings.default_queue
    headers, properties, body = build_message(gateway.app, task_id, spec.celery_name, arguments)
    parts = (headers, {**properties, "priority": 0}, body)
    same_redis = gateway.same_redis
    async with gateway.deadline():
        outcome = (await gateway.state.register_script(store.REQUEUE)(
            keys=[task_record_key(task_id), events_channel(task_id), DEAD_KEY,
                  queue_for_priority(queue, 0) if same_redis else ""],
            args=[RedisBroker.envelope(queue, parts) if same_redis else b"",
                  gateway.settings.result_ttl, repr(time.time())])).decode()
    if outcome == "missing":
        raise TaskNotFound(task_id, what="dead letter")
    if not same_redis:
        async with gateway.deadline("broker"):
            await gateway.broker.publish(queue, parts)
    return await gateway.get(task_id)

async def drop(gateway: Gateway, task_id: str, caller: Caller = SYSTEM) -> None:
    """Remove a task from the dead letters (its record stays until it expires)."""
    record = await gateway.get(task_id, caller)
    if "dead_reason" not in record:
        raise TaskNotFound(task_id, what="dead letter")
    async with gateway.deadline():
        removed = await gateway.state.zrem(DEAD_KEY, task_id)
    if not removed:
        raise TaskNotFound(task_id, what="dead letter")

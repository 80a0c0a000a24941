"""A webhook subscription's deliveries as the API shows and drives them: the list (newest first),
one delivery, a test event, a retry. Owner-scoped as the subscription (:meth:`.Webhooks.get`):
another owner's reads as unknown.

Deliveries are written by the scripts that end runs and workflows (``records/scripts/webhooks.lua``)
and by :meth:`WebhookDeliveries.send_test`, and sent by workers' keepers (``worker/webhooks.py``);
an ended one is kept ``TASKGATE_FAILURE_TTL`` s, and a subscription lists its newest
:data:`~taskgate.records.webhooks.DELIVERIES_KEPT`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import orjson

from ..auth import Caller
from ..exceptions import Conflict, TaskNotFound
from ..records import keys, webhooks
from ..records import webhooks_scripts as calls
from ..records.webhooks import TEST_EVENT, Delivery, decode_delivery
from .reads import HISTORY_BATCHES
from .submit import SYSTEM
from .webhooks import Webhooks

#: The fields a listed delivery is read with (not its payload, which may be a large result).
LISTED = ("webhook", "msg_id", "type", "state", "attempts", "created_at", "next_at", "last_at",
          "last_status", "last_error")


class Cursor(NamedTuple):
    """Where the next page of deliveries starts: below creation time ``at`` (ms), the first
    ``skip`` of those created at ``at`` itself already shown (several may share a millisecond)."""

    at: int
    skip: int


def _decoded(delivery_id: str, values: list[Any]) -> Delivery | None:
    """A delivery from the HMGET of its :data:`LISTED` fields; None when it has none."""
    found = {name.encode(): value for name, value in zip(LISTED, values, strict=True)
             if isinstance(value, bytes)}
    return decode_delivery(delivery_id, found)


def _disabled(webhook_id: str, reason: str | None) -> str:
    return (f"webhook {webhook_id} is disabled ({reason or 'by its owner'}): nothing is sent to it until "
            f'PATCH /webhooks/{webhook_id} {{"enabled": true}}')


class WebhookDeliveries:
    """Deliveries of the subscriptions :class:`.Webhooks` keeps; every call runs under the
    backend's deadline."""

    def __init__(self, subscriptions: Webhooks) -> None:
        self.subscriptions = subscriptions
        self.backend = subscriptions.backend

    async def list(self, webhook_id: str, caller: Caller = SYSTEM, limit: int = 20,
                   after: Cursor | None = None) -> tuple[list[Delivery], Cursor | None]:
        """The subscription's deliveries newest first (by creation), without their payloads,
        from ``after``; a page and the cursor of the next (None at the end). ``TaskNotFound``
        for a subscription unknown or another owner's. A page may be short while a cursor
        follows: deliveries ended and expired are passed over, at most ``HISTORY_BATCHES``
        pages' worth of them."""
        await self.subscriptions.get(webhook_id, caller)
        index = keys.deliveries_of(webhook_id)
        at, skip = after if after is not None else (None, 0)
        found: list[Delivery] = []
        async with self.backend.deadline():
            for _ in range(HISTORY_BATCHES):
                batch = cast(list[tuple[bytes, float]], await self.backend.redis.zrevrangebyscore(
                    index, "+inf" if at is None else at, "-inf", start=skip, num=limit, withscores=True))
                if not batch:
                    return found, None
                pipe = self.backend.redis.pipeline(transaction=False)
                for member, _ in batch:
                    pipe.hmget(member.decode(), *LISTED)
                replies = await pipe.execute()
                for (member, score), values in zip(batch, replies, strict=True):
                    at, skip = (at, skip + 1) if int(score) == at else (int(score), 1)
                    delivery = _decoded(calls.delivery_id_of(member.decode()), values)
                    if delivery is None:  # ended and expired; the list is trimmed to its newest
                        continue
                    found.append(delivery)
                    if len(found) == limit:
                        return found, Cursor(at, skip)
        return found, None if at is None else Cursor(at, skip)

    async def get(self, webhook_id: str, delivery_id: str, caller: Caller = SYSTEM) -> Delivery:
        """One delivery of the subscription (without its payload), or ``TaskNotFound``."""
        await self.subscriptions.get(webhook_id, caller)
        if not delivery_id.startswith(f"{webhook_id}:"):
            raise TaskNotFound(delivery_id, "delivery")
        async with self.backend.deadline():
            values = await self.backend.redis.hmget(keys.delivery(delivery_id), *LISTED)
        found = _decoded(delivery_id, values)
        if found is None or found.webhook_id != webhook_id:
            raise TaskNotFound(delivery_id, "delivery")
        return found

    async def send_test(self, webhook_id: str, caller: Caller = SYSTEM) -> Delivery:
        """A ``webhook.test`` event for the subscription, due now and sent like any other
        (whatever its events); its ``data`` names the subscription. ``Conflict`` when the
        subscription is disabled (nothing would be sent)."""
        subscription = await self.subscriptions.get(webhook_id, caller)
        msg_id = webhooks.new_test_msg_id()
        payload = orjson.dumps({"webhook_id": webhook_id,
                                "message": f"a test event: POST /webhooks/{webhook_id}/test"})
        async with self.backend.deadline():
            said = await self.backend.scripts(calls.send_test(webhook_id, msg_id, TEST_EVENT, payload))
        if said == "missing":
            raise TaskNotFound(webhook_id, "webhook")
        if said == "disabled":
            raise Conflict(_disabled(webhook_id, subscription.disabled_reason))
        return await self.get(webhook_id, webhooks.delivery_id(webhook_id, msg_id), caller)

    async def retry(self, webhook_id: str, delivery_id: str, caller: Caller = SYSTEM) -> Delivery:
        """Send a delivery not delivered (``failed``, or ``pending`` its next attempt) again now;
        its attempts count on. ``Conflict`` when it was delivered, an attempt of it is under way,
        or the subscription is disabled; ``TaskNotFound`` when there is no such delivery."""
        current = await self.get(webhook_id, delivery_id, caller)
        async with self.backend.deadline():
            said = await self.backend.scripts(calls.retry(webhook_id, delivery_id))
        if said == "missing":
            raise TaskNotFound(delivery_id, "delivery")
        if said == "delivered":
            raise Conflict(f"delivery {delivery_id} was delivered (HTTP {current.last_status}); "
                           f"POST /webhooks/{webhook_id}/test sends a new event")
        if said == "disabled":
            subscription = await self.subscriptions.get(webhook_id, caller)
            raise Conflict(_disabled(webhook_id, subscription.disabled_reason))
        if said.startswith("sending:"):
            until = datetime.fromtimestamp(int(said.removeprefix("sending:")) / 1000, UTC)
            raise Conflict(f"an attempt of delivery {delivery_id} is under way (claimed until "
                           f"{until.isoformat(timespec='seconds')}): retry once it has ended")
        return await self.get(webhook_id, delivery_id, caller)

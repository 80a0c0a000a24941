"""The scripts a delivery goes through once written, one typed call each: the sender's
(``scripts/webhook_claim.lua``, ``scripts/webhook_result.lua``: claiming due deliveries with a
lease, recording an attempt's outcome) and the API's (``scripts/webhook_test.lua``: a test event,
``scripts/webhook_retry.lua``: a delivery due again now).

The deliveries themselves (their hash, :class:`~.webhooks.Delivery`) are written by the script
that ends a run or a workflow (``scripts/webhooks.lua``); the sender is ``worker/webhooks.py``.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from . import keys
from .scripts.calls import Call, _text
from .webhooks import DELIVERIES_KEPT, delivery_id

#: How an attempt went, as the sender tells :func:`result` (see ``webhook_result.lua``).
Outcome = Literal["delivered", "gone", "error", "dropped"]
#: What :func:`result` made of it: ``retrying`` (the next attempt is due), the delivery's end
#: (``delivered``; ``gone``, ``failed``, ``disabled``, ``dropped``: it failed), or nothing done
#: (``missing``: no such delivery; ``pending`` is never said; a state: it had already ended).
Recorded = Literal["delivered", "gone", "retrying", "failed", "disabled", "dropped", "missing"]


def delivery_id_of(key: str) -> str:
    """The delivery id (``<subscription id>:<msg id>``) of a :func:`.keys.delivery` key, as the
    due set holds them."""
    return key.removeprefix(keys.DELIVERY_PREFIX)[1:-1]


def _keys_of(reply: Any) -> list[str]:
    return [_text(member) for member in reply or ()]


def claim(limit: int, lease_ms: int) -> Call[list[str]]:
    """Claim up to ``limit`` deliveries due now (Redis's clock) from :data:`.keys.WEBHOOK_DUE`:
    each is due again only ``lease_ms`` later, so a sender that dies holding it loses nothing.
    Their keys, earliest due first."""
    return Call("webhook_claim", [keys.WEBHOOK_DUE], [limit, lease_ms], _keys_of)


def result(delivery_key: str, webhook_id: str, outcome: Outcome, *, status: int | None = None,
           error: str = "", retry_ms: int | None = None, ttl: int, streak_ms: int,
           reason: str = "") -> Call[Recorded]:
    """Record an attempt of the delivery at ``delivery_key`` to subscription ``webhook_id``:
    ``status`` the receiver's answer (None: no answer), ``error`` what went wrong, ``retry_ms``
    when the next attempt is due after a failed one (None: the schedule is spent), ``ttl`` how
    long (s) an ended delivery is kept, ``streak_ms`` how long a subscription may keep failing
    before it is disabled, ``reason`` the subscription's ``disabled_reason`` should this disable
    it (a 410, or that streak)."""
    return Call("webhook_result", [delivery_key, keys.webhook(webhook_id), keys.WEBHOOK_DUE, keys.STATS],
                [outcome, "" if status is None else status, error, "" if retry_ms is None else retry_ms,
                 ttl, streak_ms, reason],
                lambda reply: cast(Recorded, _text(reply)))


#: What :func:`send_test` did: ``created``; nothing written: ``missing`` (no such subscription),
#: ``disabled`` (it is), ``exists`` (that msg id was written already).
TestWritten = Literal["created", "missing", "disabled", "exists"]


def send_test(webhook_id: str, msg_id: str, kind: str, payload: bytes) -> Call[TestWritten]:
    """Write event ``kind`` (``msg_id``, ``payload`` its JSON) for subscription ``webhook_id``,
    due now, listed with its deliveries (the newest :data:`.webhooks.DELIVERIES_KEPT` kept)."""
    return Call("webhook_test", [keys.webhook(webhook_id), keys.delivery(delivery_id(webhook_id, msg_id)),
                                 keys.WEBHOOK_DUE, keys.deliveries_of(webhook_id)],
                [webhook_id, msg_id, kind, payload, DELIVERIES_KEPT],
                lambda reply: cast(TestWritten, _text(reply)))


def retry(webhook_id: str, delivery: str) -> Call[str]:
    """Make the delivery ``delivery`` (its id) of subscription ``webhook_id``, unless delivered, pending
    and due now, its attempts counting on: ``due``; nothing done: ``missing``, ``delivered``,
    ``disabled`` (its subscription), ``sending:<ms>`` (an attempt under way, claimed until then)."""
    return Call("webhook_retry", [keys.delivery(delivery), keys.webhook(webhook_id), keys.WEBHOOK_DUE],
                [webhook_id], _text)

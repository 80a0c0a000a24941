"""A webhook subscription as Redis keeps it (:class:`Subscription`, :func:`fields_of`,
:func:`decode`) and the scripts that keep it and the sets finding it in step (:func:`put`,
:func:`drop`), the events one may name, and a delivery as the script ending a run writes it
(:class:`Delivery`, :func:`decode_delivery`).

A subscription is a hash at :func:`.keys.webhook`; its fields, as stored: ``url``; ``events`` and
``tasks`` (JSON lists; ``tasks`` absent: every task); ``description``; ``owner`` (absent for the
anonymous owner); ``all`` '1' for an admin's subscription to every owner's events; ``secret`` and
``previous_secret`` (``whsec_<base64 of 32 bytes>``); ``enabled`` '1'/'0'; ``disabled_reason``;
times in whole ms since the epoch: ``created_at``, ``previous_until`` (the previous secret signs
until then), ``failing_since`` (the first failure of the current streak); ``seq`` (bumped by every
change). Its id is in its owner's set (:func:`.keys.webhooks_of`), in :data:`.keys.WEBHOOKS`, and
in :data:`.keys.WEBHOOKS_ALL` when ``all``.

Deliveries are written in Lua (``scripts/webhooks.lua``, included by ``workflow.lua``, so by every
script that ends a run or a workflow; a test event by ``scripts/webhook_test.lua``): the field
names below are those files'.
"""

from __future__ import annotations

import base64
import logging
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

from ..constants import ANONYMOUS
from . import keys
from .model import stamp, to_time
from .scripts.calls import Arg, Call, _text

log = logging.getLogger("taskgate.records")

#: The events a subscription may name: each end of a run or a workflow, and each family's ``*``.
TASK_EVENTS = ("task.succeeded", "task.failed", "task.cancelled", "task.expired")
WORKFLOW_EVENTS = ("workflow.succeeded", "workflow.failed", "workflow.cancelled")
EVENTS = (*TASK_EVENTS, "task.*", *WORKFLOW_EVENTS, "workflow.*")
#: The type of ``POST /webhooks/{id}/test``'s event (sent whatever the subscription's events).
TEST_EVENT = "webhook.test"

#: Subscriptions one owner may have.
MAX_PER_OWNER = 100
#: Deliveries a subscription's list keeps, newest (``webhooks.lua``'s WH_DELIVERIES_KEPT).
DELIVERIES_KEPT = 1000
#: Seconds the previous secret still signs after a rotation.
PREVIOUS_SECRET_VALID = 24 * 3600

DeliveryState = Literal["pending", "delivered", "failed"]
PutMode = Literal["create", "update", "rotate"]


def new_id() -> str:
    """A new subscription's id."""
    return f"wh_{uuid.uuid4().hex}"


def new_secret() -> str:
    """A new signing secret, as Standard Webhooks writes them."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def task_msg_id(task_id: str, state: str) -> str:
    """The ``webhook-id`` of a run's end (``webhooks.lua``'s): the same across retries."""
    return f"msg_{task_id}_{state}"


def workflow_msg_id(workflow_id: str, state: str, retries: int = 0) -> str:
    """The ``webhook-id`` of a workflow's end (``webhooks.lua``'s); after ``retries`` runs again,
    a new one per run."""
    return f"msg_{workflow_id}_{state}" if retries == 0 else f"msg_{workflow_id}_{retries}_{state}"


def new_test_msg_id() -> str:
    """The ``webhook-id`` of a new ``webhook.test`` event."""
    return f"msg_test_{uuid.uuid4().hex}"


def delivery_id(webhook_id: str, msg_id: str) -> str:
    """The id of one event's delivery to one subscription (see :func:`.keys.delivery`)."""
    return f"{webhook_id}:{msg_id}"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One webhook subscription as its hash says; the secrets never appear in its repr."""

    webhook_id: str
    url: str
    events: tuple[str, ...]
    #: The task names whose runs it hears of; None: every task (workflow events ignore it).
    tasks: tuple[str, ...] | None = None
    description: str = ""
    owner: str | None = None
    #: An admin's subscription to every owner's events.
    all_owners: bool = False
    enabled: bool = True
    disabled_reason: str | None = None
    created_at: datetime | None = None
    failing_since: datetime | None = None
    seq: int = 0
    secret: str = field(default="", repr=False)
    previous_secret: str | None = field(default=None, repr=False)
    previous_until: datetime | None = None

    def signing_secrets(self, now: float) -> list[str]:
        """The secrets a delivery at ``now`` (epoch s) is signed with: the current one, and the
        previous one while it is still valid."""
        valid = (self.previous_secret and self.previous_until is not None
                 and self.previous_until.timestamp() > now)
        return [self.secret, self.previous_secret] if valid and self.previous_secret else [self.secret]


def fields_of(subscription: Subscription) -> dict[str, str | int]:
    """The hash fields of a new ``subscription`` (absent ones left out)."""
    stored: dict[str, str | int] = {
        "url": subscription.url, "events": orjson.dumps(list(subscription.events)).decode(),
        "description": subscription.description, "secret": subscription.secret,
        "enabled": "1" if subscription.enabled else "0", "seq": subscription.seq}
    if subscription.tasks is not None:
        stored["tasks"] = orjson.dumps(list(subscription.tasks)).decode()
    if subscription.owner is not None:
        stored["owner"] = subscription.owner
    if subscription.all_owners:
        stored["all"] = "1"
    if subscription.created_at is not None:
        stored["created_at"] = stamp(subscription.created_at.timestamp())
    return stored


def _strings(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k):
            (v.decode(errors="replace") if isinstance(v, bytes) else v) for k, v in raw.items()}


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None or text == "":
        return None
    value = orjson.loads(text)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("not a list of names")
    return tuple(value)


def _time(text: str | None) -> datetime | None:
    return to_time(text) if text else None


def decode(webhook_id: str, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> Subscription | None:
    """A subscription from its hash (``HGETALL``); None when there is none, or it has no url
    (a hash half gone)."""
    text = _strings(raw)
    if "url" not in text:
        return None
    try:
        events = _names(text.get("events")) or ()
        tasks = _names(text.get("tasks"))
    except ValueError:
        log.warning("webhook %s: stored events or tasks unreadable, read as none", webhook_id)
        events, tasks = (), None
    return Subscription(
        webhook_id=webhook_id, url=text["url"], events=events, tasks=tasks,
        description=text.get("description", ""), owner=text.get("owner"), all_owners=text.get("all") == "1",
        enabled=text.get("enabled", "1") == "1", disabled_reason=text.get("disabled_reason") or None,
        created_at=_time(text.get("created_at")), failing_since=_time(text.get("failing_since")),
        seq=int(text.get("seq") or 0), secret=text.get("secret", ""),
        previous_secret=text.get("previous_secret") or None, previous_until=_time(text.get("previous_until")))


def _sets(webhook_id: str, owner: str | None) -> list[str]:
    """The keys ``webhook_put.lua`` and ``webhook_drop.lua`` begin with."""
    return [keys.webhook(webhook_id), keys.webhooks_of(owner or ANONYMOUS), keys.WEBHOOKS_ALL, keys.WEBHOOKS,
            keys.WEBHOOKS_COUNT]


def put(webhook_id: str, owner: str | None, *, mode: PutMode, limit: int = 0,
        fields: Mapping[str, Arg] | None = None, drop: Sequence[str] = ()) -> Call[str]:
    """Create (at most ``limit`` per owner, 0: no limit) or change a subscription: set ``fields``
    (their stored forms), delete ``drop``; ``rotate`` keeps the current secret as
    ``previous_secret`` first. ``created``, ``updated``, ``#exists``, ``#missing`` or ``#limit``."""
    pairs: list[Arg] = []
    for name, value in (fields or {}).items():
        pairs += [name, value]
    return Call("webhook_put", _sets(webhook_id, owner), [webhook_id, mode, limit, *pairs, "", *drop], _text)


def _listed(reply: Any) -> list[str] | None:
    return None if reply is None else [_text(key) for key in reply]


def drop(webhook_id: str, owner: str | None) -> Call[list[str] | None]:
    """Delete a subscription (no run's end writes it a delivery after this) and take its listed
    deliveries off the due set: their keys, for the caller to delete; None when it is gone."""
    return Call("webhook_drop", [*_sets(webhook_id, owner), keys.WEBHOOK_DUE, keys.deliveries_of(webhook_id)],
                [webhook_id], _listed)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one subscription, as its hash says (``webhooks.lua`` writes it; the
    sender's scripts update it)."""

    delivery_id: str
    webhook_id: str
    msg_id: str
    #: The event: ``task.<state>``, ``workflow.<state>`` or ``webhook.test``.
    type: str
    #: What the event carries: the run's record as the ending script saw it (its fields as
    #: publish() encodes them), or the workflow's summary (:data:`.workflows.SUMMARY_FIELDS`
    #: and ``workflow_id``, each as stored).
    payload: dict[str, Any]
    state: DeliveryState = "pending"
    attempts: int = 0
    created_at: datetime | None = None
    next_at: datetime | None = None
    last_at: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None


def decode_delivery(delivery_id: str, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> Delivery | None:
    """A delivery from its hash (``HGETALL``); None when there is none."""
    text = _strings(raw)
    if "webhook" not in text:
        return None
    try:
        payload = orjson.loads(text.get("payload") or "{}")
    except orjson.JSONDecodeError:
        payload = {}
    status = text.get("last_status")
    return Delivery(
        delivery_id=delivery_id, webhook_id=text["webhook"], msg_id=text.get("msg_id", ""),
        type=text.get("type", ""), payload=payload if isinstance(payload, dict) else {},
        state=text.get("state", "pending"),  # type: ignore[arg-type]
        attempts=int(text.get("attempts") or 0), created_at=_time(text.get("created_at")),
        next_at=_time(text.get("next_at")), last_at=_time(text.get("last_at")),
        last_status=int(status) if status and status.isdigit() else None,
        last_error=text.get("last_error") or None)

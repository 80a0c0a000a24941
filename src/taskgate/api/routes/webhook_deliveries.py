"""A webhook subscription's deliveries over HTTP: list them, send a test event, retry one.
Owner-scoped as the subscription (``routes/webhooks.py``): another owner's is a 404."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ...producer.webhook_deliveries import Cursor
from ...records.webhooks import Delivery
from ..deps import CallerDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import errors
from .webhooks import WebhookId

DeliveryId = Annotated[str, Path(min_length=1, max_length=500,
                                 description="A delivery's id, as GET /webhooks/{webhook_id}/deliveries "
                                 "lists it (`<webhook id>:<msg id>`).")]


class DeliveryInfo(BaseModel):
    """One event's delivery to one subscription (its body is not shown: see the event's task or
    workflow)."""

    id: str = Field(description="`<webhook id>:<msg id>`.")
    msg_id: str = Field(description="The `webhook-id` header of every attempt (the same across "
                        "retries): `msg_<task id>_<state>` for a run's end, `msg_<workflow id>_<state>` "
                        "for a workflow's, `msg_test_...` for a test event.")
    type: str = Field(description="The event: `task.<state>`, `workflow.<state>` or `webhook.test`.")
    state: Literal["pending", "delivered", "failed"] = Field(
        description="`pending`: not yet delivered, an attempt due at `next_attempt_at` (or under way); "
        "`delivered`: a 2xx answer; `failed`: the retry schedule spent, a 410 Gone, or not sent (its "
        "subscription disabled or deleted, see `last_error`).")
    attempts: int = Field(description="Attempts made (a retry counts on).")
    created_at: datetime | None = Field(default=None, description="When the event happened.")
    next_attempt_at: datetime | None = Field(default=None, description="While `pending`: when it is "
                                             "due (an attempt may be under way since).")
    last_attempt_at: datetime | None = Field(default=None, description="When the last attempt ended.")
    last_status: int | None = Field(default=None, description="The HTTP status the receiver last "
                                    "answered (null: no answer).")
    last_error: str | None = Field(default=None, description="What went wrong last (the start of "
                                   "the answer's body, a timeout, a refused address, why it was not sent).")

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryInfo:
        return cls(id=delivery.delivery_id, msg_id=delivery.msg_id, type=delivery.type, state=delivery.state,
                   attempts=delivery.attempts, created_at=delivery.created_at,
                   next_attempt_at=delivery.next_at, last_attempt_at=delivery.last_at,
                   last_status=delivery.last_status, last_error=delivery.last_error)


class DeliveryPage(BaseModel):
    """One page of a subscription's deliveries, newest first."""

    deliveries: list[DeliveryInfo]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` for the next page; "
                                    "null at the end.")


async def list_deliveries(
    webhook_id: WebhookId, producer: ProducerDep, caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Page size.")] = 20,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,15}_\d{1,9}$",
                                        description="`next_cursor` of the previous page.")] = None,
) -> DeliveryPage:
    """The subscription's deliveries, newest first: their state, attempts, next attempt and last
    answer. Ended ones are kept TASKGATE_FAILURE_TTL, the newest 1000 listed. A page may hold
    fewer than `limit` while `next_cursor` says more may follow."""
    after = None
    if cursor:
        at, _, skip = cursor.partition("_")
        after = Cursor(int(at), int(skip))
    found, following = await producer.webhook_deliveries.list(webhook_id, caller, limit, after)
    return DeliveryPage(deliveries=[DeliveryInfo.of(delivery) for delivery in found],
                        next_cursor=None if following is None else f"{following.at}_{following.skip}")


async def send_test(webhook_id: WebhookId, producer: ProducerDep, caller: CallerDep) -> DeliveryInfo:
    """Sends a `webhook.test` event to the subscription, whatever events it takes, signed and
    retried like any other; `data` is `{"webhook_id", "message"}`. Its delivery, pending: follow it
    in the deliveries. 409 when the subscription is disabled."""
    return DeliveryInfo.of(await producer.webhook_deliveries.send_test(webhook_id, caller))


async def retry_delivery(webhook_id: WebhookId, delivery_id: DeliveryId, producer: ProducerDep,
                         caller: CallerDep) -> DeliveryInfo:
    """Makes a delivery not delivered (`failed`, or `pending` its next attempt) due now, with the
    same `webhook-id` and body; its attempts count on (should this one fail too, the next waits
    the schedule's delay after that many attempts, or it fails when the schedule is spent). 409
    when it was delivered, an attempt of it is under way, or the subscription is disabled."""
    return DeliveryInfo.of(await producer.webhook_deliveries.retry(webhook_id, delivery_id, caller))


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=errors(401),
                       route_class=route_class)
    def conflict(description: str) -> dict[int | str, dict[str, Any]]:
        return {409: {**errors(409)[409], "description": description}}

    router.post("/{webhook_id}/test", status_code=202, summary="Send a test event to a webhook",
                responses={**errors(404, 422, 503), **conflict("The subscription is disabled.")})(send_test)
    router.get("/{webhook_id}/deliveries", summary="A webhook's deliveries",
               responses=errors(404, 422, 503))(list_deliveries)
    router.post("/{webhook_id}/deliveries/{delivery_id}/retry", status_code=202,
                summary="Send a webhook delivery again now",
                responses={**errors(404, 422, 503), **conflict(
                    "It was delivered, an attempt of it is under way, or the subscription is disabled.")},
                )(retry_delivery)
    return router

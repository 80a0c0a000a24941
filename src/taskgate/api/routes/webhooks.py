"""Webhook subscriptions over HTTP: create, list, read, change, rotate the secret, delete.
Owner-scoped like schedules: a subscription hears its owner's runs and workflows; another
owner's is a 404; an admin key sees every one, and may make one hearing every owner's (`all`).
The secret is in the answers of POST /webhooks and POST /webhooks/{id}/rotate-secret only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from ...records.webhooks import PREVIOUS_SECRET_VALID, Subscription
from ..deps import CallerDep, ProducerDep
from ..errors import TaskgateRoute
from ..schemas import errors

WebhookId = Annotated[str, Path(min_length=1, max_length=200, description="A subscription's id (`wh_...`).")]
#: The events a subscription may name (``records.webhooks.EVENTS``; a test checks they agree).
EventName = Literal["task.succeeded", "task.failed", "task.cancelled", "task.expired", "task.*",
                    "workflow.succeeded", "workflow.failed", "workflow.cancelled", "workflow.*"]

_URL = ("Where events are POSTed: https:// (http:// only with TASKGATE_WEBHOOK_ALLOW_HTTP); a host "
        "that is or resolves to a loopback, private, link-local, reserved, multicast or metadata "
        "address is refused unless TASKGATE_WEBHOOK_ALLOW_PRIVATE.")
_EVENTS = ("The events to send: a run's end (`task.succeeded`, `task.failed`, `task.cancelled`, "
           "`task.expired`, or `task.*` for all four) and a workflow's (`workflow.succeeded`, "
           "`workflow.failed`, `workflow.cancelled`, `workflow.*`).")
_TASKS = ("Only runs of these tasks (names as in GET /tasks/catalogue); null: every task. Workflow "
          "events are sent whatever it lists.")


class WebhookCreate(BaseModel):
    """A new subscription."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, description=_URL, examples=["https://example.com/hooks/taskgate"])
    events: list[EventName] = Field(min_length=1, description=_EVENTS, examples=[["task.failed"]])
    tasks: list[str] | None = Field(default=None, description=_TASKS)
    description: str = Field(default="", max_length=500, description="What it is for, to show.")
    all: bool = Field(default=False, description="Hear every owner's runs and workflows, not only "
                      "yours: admin keys only (403 otherwise).")


class WebhookUpdate(BaseModel):
    """What to change; fields left out stay (`tasks: null`: every task)."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, max_length=2048, description=_URL)
    events: list[EventName] | None = Field(default=None, min_length=1, description=_EVENTS)
    tasks: list[str] | None = Field(default=None, description=_TASKS)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = Field(default=None, description="false: send nothing until enabled again. "
                                 "true clears `disabled_reason` and `failing_since`.")


class WebhookInfo(BaseModel):
    """A subscription (never its secret)."""

    id: str
    url: str
    events: list[str]
    tasks: list[str] | None = Field(default=None, description="null: every task.")
    description: str = ""
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, description="Why taskgate disabled it (the "
                                        "receiver answered 410 Gone, or kept failing for days).")
    failing_since: datetime | None = Field(default=None, description="The first failed attempt of "
                                           "its current streak of failures (null: none).")
    created_at: datetime | None = None
    owner: str | None = Field(default=None, description="Its owner (null: the anonymous owner, auth off).")
    all: bool = Field(default=False, description="It hears every owner's runs and workflows.")

    @classmethod
    def fields_of(cls, sub: Subscription) -> dict[str, object]:
        return {"id": sub.webhook_id, "url": sub.url, "events": list(sub.events),
                "tasks": None if sub.tasks is None else list(sub.tasks), "description": sub.description,
                "enabled": sub.enabled, "disabled_reason": sub.disabled_reason,
                "failing_since": sub.failing_since, "created_at": sub.created_at, "owner": sub.owner,
                "all": sub.all_owners}

    @classmethod
    def of(cls, sub: Subscription) -> WebhookInfo:
        return cls.model_validate(cls.fields_of(sub))


class WebhookWithSecret(WebhookInfo):
    """A subscription with its secret, shown this once: keep it to verify deliveries (Standard
    Webhooks' `webhook-signature`)."""

    secret: str = Field(description="`whsec_` and the base64 of 32 bytes: the key of each delivery's "
                        "HMAC-SHA256 signature. Shown only here.")
    previous_secret_valid_until: datetime | None = Field(
        default=None, description=f"After a rotation: deliveries are signed with the previous secret "
        f"too until then ({PREVIOUS_SECRET_VALID // 3600} h), so receivers can switch over.")

    @classmethod
    def of(cls, sub: Subscription) -> WebhookWithSecret:
        return cls.model_validate({**cls.fields_of(sub), "secret": sub.secret,
                                   "previous_secret_valid_until": sub.previous_until})


class WebhookPage(BaseModel):
    """One page of subscriptions, oldest first."""

    webhooks: list[WebhookInfo]
    next_cursor: str | None = None


async def create_webhook(body: WebhookCreate, producer: ProducerDep, caller: CallerDep,
                         request: Request, response: Response) -> WebhookWithSecret:
    """Validates the URL (a 422 says what to fix) and starts sending events from the next one on.
    The answer holds the secret: it is never shown again (rotate it if it is lost)."""
    sub = await producer.webhooks.create(body.url, body.events, body.tasks, body.description,
                                         all_owners=body.all, caller=caller)
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{sub.webhook_id}"
    return WebhookWithSecret.of(sub)


async def list_webhooks(
    producer: ProducerDep, caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=500, description="Page size.")] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,9}$",
                                        description="`next_cursor` of the previous page.")] = None,
) -> WebhookPage:
    """Yours (every one with an admin key), oldest first (those made in one millisecond in any
    order)."""
    found, after = await producer.webhooks.list(caller, limit, int(cursor) if cursor else 0)
    return WebhookPage(webhooks=[WebhookInfo.of(sub) for sub in found],
                       next_cursor=str(after) if after is not None else None)


async def get_webhook(webhook_id: WebhookId, producer: ProducerDep, caller: CallerDep) -> WebhookInfo:
    """The subscription, whether it is enabled, and why not."""
    return WebhookInfo.of(await producer.webhooks.get(webhook_id, caller))


async def update_webhook(webhook_id: WebhookId, body: WebhookUpdate, producer: ProducerDep,
                         caller: CallerDep) -> WebhookInfo:
    """Applies to events from now on. `enabled: true` after taskgate disabled it sends again."""
    given = body.model_fields_set
    changes = body.model_dump(include=given - {"tasks"}, exclude_none=True)
    if "tasks" in given:
        changes["tasks"] = body.tasks
    return WebhookInfo.of(await producer.webhooks.update(webhook_id, caller, **changes))


async def rotate_secret(webhook_id: WebhookId, producer: ProducerDep, caller: CallerDep) -> WebhookWithSecret:
    """A new secret, shown this once; the previous one keeps signing (a second signature) for
    24 hours, so receivers can switch over."""
    return WebhookWithSecret.of(await producer.webhooks.rotate_secret(webhook_id, caller))


async def delete_webhook(webhook_id: WebhookId, producer: ProducerDep, caller: CallerDep) -> None:
    """Nothing more is sent to it: deliveries not yet sent are dropped."""
    await producer.webhooks.delete(webhook_id, caller)


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """These routes, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(prefix="/webhooks", tags=["webhooks"], responses=errors(401),
                       route_class=route_class)
    admin_only: dict[int | str, dict[str, Any]] = {
        403: {**errors(403)[403], "description": "`all: true` needs an admin API key."}}
    router.post("", status_code=201, summary="Subscribe to task and workflow events",
                responses={**admin_only, **errors(422, 503)})(create_webhook)
    router.get("", summary="List webhook subscriptions", responses=errors(422, 503))(list_webhooks)
    router.get("/{webhook_id}", summary="A webhook subscription",
               responses=errors(404, 422, 503))(get_webhook)
    router.patch("/{webhook_id}", summary="Change a webhook subscription",
                 responses=errors(404, 422, 503))(update_webhook)
    router.post("/{webhook_id}/rotate-secret", summary="Rotate a webhook's secret",
                responses=errors(404, 422, 503))(rotate_secret)
    router.delete("/{webhook_id}", status_code=204, summary="Delete a webhook subscription",
                  responses=errors(404, 422, 503))(delete_webhook)
    return router

"""Annotated dependencies, so route signatures read like prose."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from .. import auth
from ..auth import Caller
from ..config import Settings
from ..exceptions import ConfigurationError, Forbidden, Unauthorized
from ..producer import SYSTEM, Producer
from . import sessions

if TYPE_CHECKING:
    from ..gate import Taskgate


def gate_of(request: Request) -> Taskgate:
    """The :class:`~taskgate.Taskgate` whose router serves this request (its route put it in the
    request's scope); for a route of another router, the one ``Taskgate.lifespan`` put in
    ``app.state.taskgate``."""
    gate: Taskgate | None = request.scope.get("taskgate") or getattr(request.app.state, "taskgate", None)
    if gate is None:
        raise ConfigurationError("taskgate's router is included but its Taskgate is not open in this app: "
                                 "pass `lifespan=tg.lifespan` to FastAPI(), or enter "
                                 "`async with tg.lifespan(app):` in your own lifespan")
    return gate


def producer_of(request: Request) -> Producer:
    """The open Taskgate's producer (see :func:`gate_of`)."""
    return gate_of(request).producer


async def get_producer(request: Request) -> Producer:
    """``producer_of`` as a dependency. Async, so FastAPI calls it on the event loop rather than
    hopping to its thread pool on every request."""
    return producer_of(request)


async def get_app_settings(request: Request) -> Settings:
    """The settings of the app's Taskgate."""
    return gate_of(request).settings


async def get_caller(request: Request) -> Caller:
    """Who is calling: the owner ``Taskgate(owner=...)`` names for the request, by the app's own
    auth; else the owner of the API key sent as ``Authorization: Bearer <key>``, or the
    anonymous admin while auth is off. A plain function of the request, so the submit routes
    call it directly, without a dependency to solve per request."""
    gate = gate_of(request)
    if gate.owner is not None:  # the user's own auth names the owner
        owner = gate.owner(request)
        if inspect.isawaitable(owner):
            owner = await owner
        if not owner:
            raise Unauthorized("this request has no owner: the app's own authentication did not name one")
        return Caller(owner=str(owner))
    if not gate.auth:
        return SYSTEM
    if "authorization" not in request.headers and sessions.COOKIE in request.cookies:
        found = await sessions.current(gate.producer.backend, request)  # the dashboard's session
        if found is None:
            raise Unauthorized("the dashboard's session has ended: log in again")
        if not found.allows(request):
            raise Forbidden("a request from the dashboard that changes something must carry its "
                            "X-CSRF-Token")
        return found.caller
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send your API key as `Authorization: Bearer <key>` (create one with "
                           "`taskgate keys create --owner NAME`)")
    parsed = auth.parse(token.strip())
    caller = None if parsed is None else await gate.api_keys.caller(*parsed)
    if caller is None:
        raise Unauthorized("invalid or revoked API key")
    return caller


async def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """The caller, who must hold an admin key (when auth is on)."""
    if not caller.admin:
        raise Forbidden("this endpoint needs an admin API key")
    return caller


ProducerDep = Annotated[Producer, Depends(get_producer)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]

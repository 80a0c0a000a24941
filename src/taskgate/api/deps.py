"""Annotated dependencies, so route signatures read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .. import auth
from ..auth import Caller
from ..config import Settings
from ..exceptions import Forbidden, Unauthorized
from ..producer import SYSTEM, Producer


def producer_of(request: Request) -> Producer:
    """The producer built at startup (see ``app.lifespan``)."""
    producer: Producer = request.app.state.producer
    return producer


async def get_producer(request: Request) -> Producer:
    """``producer_of`` as a dependency. Async, so FastAPI calls it on the event loop rather than
    hopping to its thread pool on every request."""
    return producer_of(request)


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_caller(request: Request) -> Caller:
    """Who is calling: the owner of the API key sent as ``Authorization: Bearer <key>``, or the
    anonymous admin while auth is off. A plain function of the request, so the submit routes
    call it directly, without a dependency to solve per request."""
    if not request.app.state.auth:
        return SYSTEM
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send your API key as `Authorization: Bearer <key>` (create one with "
                           "`taskgate keys create --owner NAME`)")
    parsed = auth.parse(token.strip())
    caller = None
    if parsed is not None:
        key_id, secret = parsed
        backend = producer_of(request).backend
        async with backend.deadline():
            stored = await auth.lookup(backend.redis, key_id)
        caller = auth.verify(stored, secret)
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

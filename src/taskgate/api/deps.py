"""Annotated dependencies, so route signatures read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from .. import auth
from ..auth import Caller
from ..config import Settings
from ..exceptions import Forbidden, Unauthorized
from ..jobs import SYSTEM, Gateway


async def get_gateway(request: Request) -> Gateway:
    """The gateway built at startup (see ``app.lifespan``). Async, so FastAPI calls it on the
    event loop rather than hopping to its thread pool on every request."""
    gateway: Gateway = request.app.state.gateway
    return gateway


async def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_caller(
    request: Request,
    authorization: Annotated[str | None, Header(description="`Bearer <API key>` when auth is on.",
                                                include_in_schema=False)] = None,
) -> Caller:
    """Who is calling: the owner of the API key, or the anonymous admin while auth is off."""
    if not request.app.state.auth:
        return SYSTEM
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send your API key as `Authorization: Bearer <key>` (create one with "
                           "`taskgate keys create --owner NAME`)")
    parsed = auth.parse(token.strip())
    caller = None
    if parsed is not None:
        key_id, secret = parsed
        caller = auth.verify(await (await get_gateway(request)).api_key(key_id), secret)
    if caller is None:
        raise Unauthorized("invalid or revoked API key")
    return caller


async def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """The caller, who must hold an admin key (when auth is on)."""
    if not caller.admin:
        raise Forbidden("this endpoint needs an admin API key")
    return caller


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]

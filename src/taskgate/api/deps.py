"""Annotated dependencies, so route signatures read like prose."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ..config import Settings
from ..jobs import Gateway


def get_gateway(request: Request) -> Gateway:
    """The gateway built at startup (see ``app.lifespan``)."""
    gateway: Gateway = request.app.state.gateway
    return gateway


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]

"""The sender's session (``worker/webhook_transport.py``) against a local receiver: it connects
only to addresses the guard accepts, the very ones it checked."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from taskgate.config import Settings
from taskgate.exceptions import UnsafeURL
from taskgate.worker import webhook_transport

from .receiver import receiving


def post(url: str, *, allow_private: bool) -> int:
    """POST ``url`` through the guarded session (no ``check_url`` first): its status."""
    settings = Settings(webhook_allow_http=True, webhook_allow_private=allow_private)

    async def send() -> int:
        async with webhook_transport.guarded_session(settings, connections=4, timeout=5) as session, \
                session.post(url, data=b"{}") as answer:
            return answer.status

    return asyncio.run(send())


def test_an_inner_address_is_refused_as_it_connects() -> None:
    with receiving() as receiver:
        url = receiver.url("/inner").replace("127.0.0.1", "localhost")
        with pytest.raises(UnsafeURL, match="resolves to 127.0.0.1, a loopback address"):
            post(url, allow_private=False)
        assert receiver.at("/inner") == []
        assert post(url, allow_private=True) == 200  # TASKGATE_WEBHOOK_ALLOW_PRIVATE: by name
        assert len(receiver.at("/inner")) == 1


def test_it_connects_to_the_addresses_it_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name no resolver knows, which the guard's lookup says is 127.0.0.1 (taken as public
    here): reached only because the connection goes to the checked address, not by name again."""
    checked: list[str] = []

    async def lookup(host: str, port: int | None = None) -> list[ipaddress.IPv4Address]:
        checked.append(host)
        return [ipaddress.IPv4Address("127.0.0.1")]

    monkeypatch.setattr(webhook_transport, "resolved_addresses", lookup)
    monkeypatch.setattr(webhook_transport, "refusal", lambda address: None)
    with receiving() as receiver:
        url = receiver.url("/pinned").replace("127.0.0.1", "rebound.invalid")
        assert post(url, allow_private=False) == 200
        assert checked == ["rebound.invalid"] and len(receiver.at("/pinned")) == 1

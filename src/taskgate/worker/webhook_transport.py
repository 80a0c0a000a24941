"""The sender's HTTP transport: it connects only to addresses the URL guard accepts, checked as
it connects.

``webhooks_guard.check_url`` before an attempt looks the host up and refuses an inner address;
were the connection then made by name, a host answering the lookups differently (DNS rebinding,
a TTL of 0) could pass that check and be reached at 127.0.0.1 or the metadata address. So
every new connection resolves the host once (:func:`~taskgate.webhooks_guard.resolved_addresses`),
refuses it if any address is refused (:func:`~taskgate.webhooks_guard.refusal`) and connects to
those very addresses, in order; TLS still verifies the certificate for the URL's host name.
With ``TASKGATE_WEBHOOK_ALLOW_PRIVATE`` it connects by name, as any client.
"""

from __future__ import annotations

import typing

import httpcore
import httpx

from ..config import Settings
from ..exceptions import UnsafeURL
from ..webhooks_guard import refusal, resolved_addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the guard accepts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 (httpcore's)
                          local_address: str | None = None,
                          socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                          ) -> httpcore.AsyncNetworkStream:
        if self.settings.webhook_allow_private:
            return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        try:
            addresses = await resolved_addresses(host, port)
        except UnsafeURL as exc:
            raise httpcore.ConnectError(str(exc)) from None
        for address in addresses:
            kind = refusal(address)
            if kind is not None:
                raise httpcore.ConnectError(f"{host} resolves to {address}, {kind}: not called "
                                            "(TASKGATE_WEBHOOK_ALLOW_PRIVATE=1 allows it)")
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(str(address), port, timeout, local_address,
                                                    socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # resolved_addresses never returns none
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_transport(settings: Settings, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """An httpx transport (no proxy, no environment) whose connections go through
    :class:`GuardedBackend`. httpx takes no network backend, so its connection pool is built
    again with one (httpx keeps it as ``_pool`` since 0.18)."""
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False), max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(settings))
    return transport

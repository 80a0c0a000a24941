"""The sender's HTTP client: an ``aiohttp`` session whose connections go only to addresses the URL
guard accepts, checked as it connects.

``webhooks_guard.check_url`` before an attempt looks the host up and refuses an inner address;
were the connection then made by name, a host answering the lookups differently (DNS rebinding,
a TTL of 0) could pass that check and be reached at 127.0.0.1 or the metadata address. So the
session's resolver (:class:`GuardedResolver`) resolves the host once
(:func:`~taskgate.webhooks_guard.resolved_addresses`), refuses it if any address is refused
(:func:`~taskgate.webhooks_guard.refusal`) and hands the connector those very addresses,
numeric, to connect to in order; TLS still verifies the certificate for the URL's host name. An
IP literal is not looked up, and ``check_url`` has refused it already if it is an inner one.
With ``TASKGATE_WEBHOOK_ALLOW_PRIVATE`` the session resolves as any client.

aiohttp, not httpx: at 32 sends at once to one local receiver, httpx with httpcore took 1.5-1.7
ms of CPU per request (its connection pool checks every connection at each request), aiohttp
0.1 ms (one process POSTing 5,000 requests, ``resource.getrusage``).
"""

from __future__ import annotations

import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ..config import Settings
from ..exceptions import UnsafeURL
from ..webhooks_guard import refusal, resolved_addresses


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, answering with a host's addresses only when the guard accepts every
    one; otherwise :class:`~taskgate.exceptions.UnsafeURL` (not an ``OSError``: aiohttp lets it
    through as it is, and the sender records its message)."""

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = await resolved_addresses(host, port)
        for address in addresses:
            kind = refusal(address)
            if kind is not None:
                raise UnsafeURL(f"url: {host} resolves to {address}, {kind}: not called "
                                "(TASKGATE_WEBHOOK_ALLOW_PRIVATE=1 allows it)")
        return [ResolveResult(hostname=host, host=str(address), port=port,
                              family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                              proto=0, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
                for address in addresses]

    async def close(self) -> None:
        """Nothing to release."""


def guarded_session(settings: Settings, *, connections: int, timeout: float) -> aiohttp.ClientSession:
    """The deliverer's session (made inside its event loop): at most ``connections`` at once,
    each attempt within ``timeout`` s, no proxy or environment, no cookies kept between
    receivers, bodies not decompressed; resolving through :class:`GuardedResolver` unless
    ``TASKGATE_WEBHOOK_ALLOW_PRIVATE``."""
    resolver = None if settings.webhook_allow_private else GuardedResolver()
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=0, resolver=resolver)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout),
                                 cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False, trust_env=False)

"""Which webhook URLs taskgate may call: the one check made when a subscription is made or
changed (``POST``/``PATCH /webhooks``) and again by the sender before every delivery, on the
addresses the host resolves to then (a name public at creation may point at 127.0.0.1 later).

https only unless ``TASKGATE_WEBHOOK_ALLOW_HTTP``; a host that is, or resolves to, a loopback,
private, link-local, reserved, multicast or cloud metadata address is refused unless
``TASKGATE_WEBHOOK_ALLOW_PRIVATE``. An IPv6 address carrying an IPv4 one (mapped ``::ffff:``,
6to4 ``2002::``, NAT64 ``64:ff9b::``) is judged by the IPv4 address it carries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import NamedTuple
from urllib.parse import urlsplit

from .config import Settings
from .exceptions import UnsafeURL

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The longest URL accepted.
MAX_URL = 2048
#: The instance metadata services of the clouds (AWS, GCP, Azure, ...; AWS's IPv6 one).
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: Seconds a host may take to resolve.
RESOLVE_TIMEOUT = 5.0


class Target(NamedTuple):
    """Where a URL points: its scheme, host (no brackets) and port."""

    scheme: str
    host: str
    port: int


def target(url: str, settings: Settings) -> Target:
    """Where ``url`` points, if its form is one taskgate calls (no address looked at): absolute,
    https (or http with ``TASKGATE_WEBHOOK_ALLOW_HTTP``), a host, no credentials; else
    :class:`~taskgate.exceptions.UnsafeURL` saying what to fix."""
    if len(url) > MAX_URL:
        raise UnsafeURL(f"url: at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"url: not a URL taskgate can call ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme == "http" and not settings.webhook_allow_http:
        raise UnsafeURL("url: use https:// (http:// only with TASKGATE_WEBHOOK_ALLOW_HTTP=1, for tests "
                        "and networks you trust)")
    if scheme not in ("https", "http"):
        raise UnsafeURL("url: give an absolute https:// URL, e.g. https://example.com/hooks/taskgate")
    if not parts.hostname:
        raise UnsafeURL("url: name a host, e.g. https://example.com/hooks/taskgate")
    if parts.username is not None or parts.password is not None:
        raise UnsafeURL("url: put no credentials in it (they would be stored and shown); receivers "
                        "verify each delivery's webhook-signature instead")
    return Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


def carried(address: Address) -> Address:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), else ``address``."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def refusal(address: Address) -> str | None:
    """What kind of address ``address`` is when taskgate may not call it (without
    ``TASKGATE_WEBHOOK_ALLOW_PRIVATE``), e.g. ``"a loopback address"``; None for a public one."""
    address = carried(address)
    kinds = [(address in METADATA, "the cloud metadata address"), (address.is_loopback, "a loopback address"),
             (address.is_link_local, "a link-local address"), (address.is_multicast, "a multicast address"),
             (address.is_private, "a private address"), (address.is_unspecified, "the unspecified address"),
             (address.is_reserved, "a reserved address"), (not address.is_global, "not a public address")]
    return next((kind for found, kind in kinds if found), None)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


async def resolved_addresses(host: str, port: int | None = None) -> list[Address]:
    """Every address ``host`` resolves to, each once, in the resolver's order (an IP literal:
    itself), looked up without blocking the event loop (``loop.getaddrinfo``). A host that does
    not resolve (within :data:`RESOLVE_TIMEOUT`): :class:`~taskgate.exceptions.UnsafeURL` with
    ``temporary`` set."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    lookup = asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    try:
        infos = await asyncio.wait_for(lookup, RESOLVE_TIMEOUT)
    except TimeoutError:
        raise UnsafeURL(f"url: the host {host} did not resolve within {RESOLVE_TIMEOUT:g} s",
                        temporary=True) from None
    except (OSError, UnicodeError) as exc:
        raise UnsafeURL(f"url: the host {host} does not resolve ({exc})", temporary=True) from None
    found: list[Address] = []
    for *_, sockaddr in infos:
        address = _literal(str(sockaddr[0]))
        if address is not None and address not in found:
            found.append(address)
    if not found:
        raise UnsafeURL(f"url: the host {host} resolves to no address", temporary=True)
    return found


async def check_url(url: str, settings: Settings) -> None:
    """Refuse (:class:`~taskgate.exceptions.UnsafeURL`, saying what to fix) a URL taskgate may
    not call now: its form (:func:`target`), then, unless ``TASKGATE_WEBHOOK_ALLOW_PRIVATE``,
    every address its host is or resolves to (:func:`refusal`)."""
    where = target(url, settings)
    if settings.webhook_allow_private:
        return
    for address in await resolved_addresses(where.host, where.port):
        kind = refusal(address)
        if kind is not None:
            literal = _literal(where.host) is not None
            named = where.host if literal else f"{where.host} (resolving to {address})"
            raise UnsafeURL(f"url: {named} is {kind}: webhooks go to public hosts only "
                            "(TASKGATE_WEBHOOK_ALLOW_PRIVATE=1 allows others, for tests and your own "
                            "network)")

"""The webhook URL guard on its own: the forms refused, each kind of address refused (IPv6
forms carrying an IPv4 address too), names resolved on the event loop. Settings are built here,
the guard on unless a test says otherwise."""

from __future__ import annotations

import asyncio
import ipaddress
import threading

import pytest

from taskgate.config import Settings
from taskgate.exceptions import InvalidArguments, UnsafeURL
from taskgate.webhooks_guard import check_url, refusal, resolved_addresses, target

GUARDED = Settings(redis_url="redis://unused", webhook_allow_http=False, webhook_allow_private=False)
OPEN = Settings(redis_url="redis://unused", webhook_allow_http=True, webhook_allow_private=True)


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "a loopback address"), ("::1", "a loopback address"),
    ("::ffff:127.0.0.1", "a loopback address"), ("2002:7f00:1::", "a loopback address"),
    ("64:ff9b::7f00:1", "a loopback address"), ("10.0.0.1", "a private address"),
    ("172.16.5.4", "a private address"), ("192.168.1.1", "a private address"), ("fc00::1", "a private address"),
    ("169.254.169.254", "the cloud metadata address"), ("fd00:ec2::254", "the cloud metadata address"),
    ("169.254.1.1", "a link-local address"), ("fe80::1", "a link-local address"),
    ("224.0.0.1", "a multicast address"), ("ff02::1", "a multicast address"),
    ("100.64.0.1", "not a public address"), ("240.0.0.1", "a private address"),
])
def test_inner_addresses_are_refused_by_kind(address: str, kind: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_https_only_unless_allowed() -> None:
    with pytest.raises(UnsafeURL, match="use https://.*TASKGATE_WEBHOOK_ALLOW_HTTP"):
        target("http://example.com/", GUARDED)
    assert target("http://example.com/", OPEN) == ("http", "example.com", 80)
    assert target("https://[::1]:8443/x", GUARDED) == ("https", "::1", 8443)


@pytest.mark.parametrize(("url", "says"), [
    ("ftp://example.com/", "absolute https://"), ("/hooks", "absolute https://"),
    ("https:///path", "name a host"), ("https://a:b@example.com/", "credentials"),
    ("https://example.com:99999/", "not a URL"), ("https://example.com/" + "x" * 2048, "at most"),
])
def test_forms_refused_say_what_to_fix(url: str, says: str) -> None:
    with pytest.raises(UnsafeURL, match=says) as caught:
        target(url, OPEN)
    assert isinstance(caught.value, InvalidArguments) and caught.value.errors[0].loc == ("body", "url")


def test_names_are_resolved_on_the_event_loop_and_checked() -> None:
    async def check() -> None:
        beat = asyncio.Event()  # the loop runs other work while the name resolves
        asyncio.get_running_loop().call_soon(beat.set)
        assert ipaddress.ip_address("127.0.0.1") in await resolved_addresses("localhost")
        assert beat.is_set()
        assert await resolved_addresses("10.0.0.1") == [ipaddress.ip_address("10.0.0.1")]
        with pytest.raises(UnsafeURL, match="resolving to 127.0.0.1"):
            await check_url("https://localhost/", GUARDED)
        with pytest.raises(UnsafeURL) as unknown:
            await check_url("https://no-such-host.invalid/", GUARDED)
        assert unknown.value.temporary and "does not resolve" in str(unknown.value)
        await check_url("https://8.8.8.8/", GUARDED)
        await check_url("http://localhost/", OPEN)  # allowed: nothing resolved
    assert threading.current_thread() is threading.main_thread()
    asyncio.run(check())


def test_a_host_slow_to_resolve_is_refused_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("taskgate.webhooks_guard.RESOLVE_TIMEOUT", 0.05)

    async def check() -> None:
        async def never(*_: object, **__: object) -> list[object]:
            await asyncio.Event().wait()  # a resolver that does not answer
            return []

        asyncio.get_running_loop().getaddrinfo = never  # type: ignore[method-assign]
        with pytest.raises(UnsafeURL, match="did not resolve within 0.05 s") as slow:
            await check_url("https://slow.example/", GUARDED)
        assert slow.value.temporary
    asyncio.run(check())

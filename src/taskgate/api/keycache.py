"""API keys checked from memory: each API process keeps the keys it verified lately, so a
request with a known key makes no Redis round trip, and revocation still holds across replicas.

An entry is the key id, the SHA-256 of its secret as Redis stores it, and the caller it stands
for. A request's secret is hashed and compared with the entry's in constant time; a mismatch,
an unknown id or an expired entry is checked against Redis as before, and only a check that
succeeded is kept. At most :data:`SIZE` keys are kept (the least recently verified leaves
first), each for ``TASKGATE_KEY_CACHE_TTL`` seconds counted from the start of the Redis read
it was made of.

Revocation: :func:`taskgate.auth.revoke` publishes the key's id on ``taskgate:apikey-changes``
after deleting it, and every process subscribed there drops it on arrival. Nothing is kept
unless the process is subscribed (confirmed by Redis) from before the read to after it, and a
read that a notice or a lost subscription overtook is not kept either, so a check can never
outlive a notice it raced. When the subscription breaks (a ping unanswered within
``subscriptions.KEEPALIVE`` seconds, or the connection closed), every key is forgotten and
none is kept until a new subscription is confirmed (tried again at the first check at least
:data:`RETRY` seconds later). Hence the worst case for a revoked key: accepted until its
notice arrives, and never later than ``TASKGATE_KEY_CACHE_TTL`` seconds after the revocation,
whatever happened to the notice (or for a key deleted without one).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import auth, connections
from ..auth import Caller
from ..producer.backend import Backend
from ..producer.subscriptions import Subscriptions
from ..records import keys

log = logging.getLogger("taskgate")

#: Keys one process keeps at most.
SIZE = 10_000
#: Seconds between attempts to subscribe to the revocations, after one failed.
RETRY = 1.0
#: Longest single wait for a notice (the subscription's own pings find a dead connection).
_QUIET = 3600.0


@dataclass(frozen=True, slots=True)
class _Verified:
    digest: str
    caller: Caller
    until: float


class KeyCache:
    """``await cache.caller(key_id, secret)``: the caller an API key stands for, None for a
    wrong secret or an unknown or revoked key. ``notices``: a :class:`Subscriptions` of its own
    (one pub/sub connection), closed by :meth:`close`."""

    def __init__(self, backend: Backend, notices: Subscriptions, ttl: float, size: int = SIZE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backend, self.notices, self.ttl, self.size, self.clock = backend, notices, ttl, size, clock
        self._kept: dict[str, _Verified] = {}
        #: Bumped by every notice and every change of :attr:`live`: a read started under another
        #: generation is not kept.
        self._generation = 0
        #: Subscribed to the revocations (Redis confirmed it), so keys may be kept.
        self.live = False
        self._listener: asyncio.Task[None] | None = None
        self._retry_at = 0.0

    @classmethod
    def of(cls, backend: Backend) -> KeyCache:
        """A cache of keys read through ``backend``, for ``TASKGATE_KEY_CACHE_TTL`` seconds, with
        a pub/sub client of its own (no connection is made before the first check)."""
        url, timeout = backend.settings.require_redis_url(), backend.timeout
        notices = Subscriptions(connections.events(url, timeout, connections.KEYS_CLIENT_NAME), timeout)
        return cls(backend, notices, backend.settings.key_cache_ttl)

    def __len__(self) -> int:
        return len(self._kept)

    async def caller(self, key_id: str, secret: str) -> Caller | None:
        """Who ``tg_<key_id>_<secret>`` stands for: from memory when kept and the secret's
        digest matches (constant time), else read from Redis (and kept if it matched)."""
        now = self.clock()
        kept = self._kept.get(key_id)
        if kept is not None and now < kept.until:
            if hmac.compare_digest(kept.digest, auth.digest(secret)):
                return kept.caller
        elif kept is not None:
            del self._kept[key_id]
        if self.ttl > 0:
            self._listen(now)
        generation = self._generation
        async with self.backend.deadline():
            stored = await auth.lookup(self.backend.redis, key_id)
        found = auth.verify(stored, secret)
        if found is not None and self.live and generation == self._generation and self.ttl > 0:
            self._keep(key_id, _Verified(auth.digest(secret), found, now + self.ttl))
        return found

    def _keep(self, key_id: str, verified: _Verified) -> None:
        self._kept.pop(key_id, None)
        while len(self._kept) >= self.size:
            del self._kept[next(iter(self._kept))]
        self._kept[key_id] = verified

    def forget(self, key_id: str) -> None:
        """Drop ``key_id`` (a revocation notice)."""
        self._generation += 1
        self._kept.pop(key_id, None)

    def _set_live(self, live: bool) -> None:
        self._generation += 1
        self.live = live
        if not live:
            self._kept.clear()

    def _listen(self, now: float) -> None:
        """Subscribe to the revocations, unless subscribed or subscribing, or a failure was
        too recent."""
        if (self._listener is None or self._listener.done()) and now >= self._retry_at:
            self._listener = asyncio.create_task(self._notices(), name="taskgate-key-revocations")

    async def _notices(self) -> None:
        try:
            async with self.notices(keys.APIKEY_CHANGES) as subscription:
                self._set_live(True)
                while True:
                    notice = await subscription.get(_QUIET)
                    if notice is not None:
                        self.forget(notice[1].decode(errors="replace"))
        except Exception as exc:
            level = logging.WARNING if self.live else logging.DEBUG
            log.log(level, "API keys: not subscribed to revocations (%s); every key is read from "
                    "Redis until subscribed again", exc)
        finally:
            self._set_live(False)
            self._retry_at = self.clock() + RETRY

    async def close(self) -> None:
        """Stop listening and close the subscription's connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener])
        self._set_live(False)
        await self.notices.close()

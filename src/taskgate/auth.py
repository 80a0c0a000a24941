"""API keys: created by ``taskgate keys create``, checked on every request, revoked at once.

A key reads ``tg_<key id>_<secret>``. Redis keeps, under ``taskgate:apikey:<key id>``, the
owner, the admin flag and the SHA-256 of the secret, never the secret itself. A request's
secret is hashed and compared in constant time.

Each API process keeps the keys it verified lately in memory (:mod:`taskgate.api.keycache`),
so a request with a known key makes no Redis round trip. :func:`revoke` deletes the key and,
in the same transaction, publishes its id on ``taskgate:apikey-changes``; every process drops
it on that notice, so a revoked key is refused as soon as the notice arrives (milliseconds).
The worst case, should a notice be lost or the key be deleted without one (``DEL``,
``FLUSHDB``): a revoked key is still accepted for at most ``TASKGATE_KEY_CACHE_TTL`` seconds
(5 by default) after its revocation, the life of a cached check, counted from the Redis read
it was made of. A process that loses its subscription to the notices forgets every key and
caches none until it is subscribed again. Creating a key needs no notice: key ids are never
reused, and a failed check is never cached.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from .constants import ANONYMOUS
from .records import keys

_KEY = re.compile(r"^tg_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is making a request."""

    owner: str
    admin: bool = False

    def may_see(self, owner: str | None) -> bool:
        """True when this caller may see a task owned by ``owner``."""
        return self.admin or owner == self.owner


def digest(secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(key: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a well-formed key, else None."""
    match = _KEY.match(key)
    return (match.group(1), match.group(2)) if match else None


def verify(stored: dict[bytes, bytes] | dict[str, str], secret: str) -> Caller | None:
    """The caller a stored key stands for, if ``secret`` matches it (constant-time)."""
    fields = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
              for k, v in stored.items()}
    expected = fields.get("secret_sha256", "")
    if not expected or not hmac.compare_digest(expected, digest(secret)):
        return None
    return Caller(owner=fields["owner"], admin=fields.get("admin") == "1")


def create(client: Redis, owner: str, admin: bool = False) -> tuple[str, str]:
    """Store a new key for ``owner``; return ``(key id, full key)``. The key is shown once."""
    if owner == ANONYMOUS:
        raise ValueError(f"owner {owner!r} is reserved for requests made while auth is off; "
                         "pick another name")
    if not _OWNER.match(owner):
        raise ValueError(f"owner {owner!r}: use 1-64 letters, digits and _ . @ - (starting with a "
                         "letter or digit)")
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    client.hset(keys.apikey(key_id), mapping={"owner": owner, "admin": "1" if admin else "0",
                                             "secret_sha256": digest(secret),
                                             "created_at": repr(time.time())})
    return key_id, f"tg_{key_id}_{secret}"


def listing(client: Redis) -> list[dict[str, Any]]:
    """Every key: id, owner, admin, created_at (never the secret or its hash)."""
    out = []
    for raw in sorted(client.scan_iter(match=f"{keys.APIKEY_PREFIX}*", count=1000)):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        stored = cast(dict[bytes, bytes], client.hgetall(name))
        fields = {k.decode(): v.decode() for k, v in stored.items()}
        out.append({"key_id": name.removeprefix(keys.APIKEY_PREFIX), "owner": fields.get("owner"),
                    "admin": fields.get("admin") == "1",
                    "created_at": float(fields.get("created_at", "0"))})
    return out


def revoke(client: Redis, key_id: str) -> bool:
    """Delete a key and tell every API process to forget it (one transaction: the notice
    follows the deletion, never precedes it); True if it existed. The notice goes out even for
    a key already gone, so revoking again clears any cache still holding it."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.apikey(key_id))
    pipe.publish(keys.APIKEY_CHANGES, key_id)
    deleted, _ = pipe.execute()
    return bool(deleted)


async def lookup(client: AsyncRedis, key_id: str) -> dict[bytes, bytes]:
    """The stored form of an API key (empty if unknown or revoked)."""
    return cast(dict[bytes, bytes], await client.hgetall(keys.apikey(key_id)))

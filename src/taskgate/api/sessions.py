"""The dashboard's sessions: a random token in an HttpOnly, SameSite=Strict cookie names a
session kept in Redis (``taskgate:session:<sha256 of the token>``: its owner, whether admin,
its CSRF token and the API key it was opened with), for :data:`TTL` seconds. Logging out
deletes it on the server; revoking the key ends it at its next request."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import cast

from fastapi import Request, Response

from ..auth import Caller
from ..exceptions import Forbidden
from ..producer.backend import Backend
from ..records import keys

#: The cookie's name.
COOKIE = "taskgate_session"
#: How long a session lasts, in seconds (it is not renewed by use).
TTL = 8 * 3600
#: Methods that change nothing: they need no CSRF token (unless the route changes something
#: anyway, as ``GET /add`` does: see :data:`CHANGES`).
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
#: Set in a request's scope by a route that changes something (``api.errors.TaskgateRoute``).
CHANGES = "taskgate.changes"


def changes(request: Request) -> bool:
    """Whether ``request`` changes something: its method is not safe, or its route says so."""
    return request.method not in SAFE or bool(request.scope.get(CHANGES))


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in page: the cookie's token, its CSRF token, who it acts as, and the API key it
    was opened with (revoking the key ends the session)."""

    token: str
    csrf: str
    caller: Caller
    key_id: str

    def allows(self, request: Request) -> bool:
        """True for a request that changes nothing (:func:`changes`), or one carrying this
        session's CSRF token."""
        if not changes(request):
            return True
        return hmac.compare_digest(request.headers.get("x-csrf-token", ""), self.csrf)


def _key(token: str) -> str:
    return keys.session(hashlib.sha256(token.encode()).hexdigest())


async def create(backend: Backend, caller: Caller, key_id: str) -> Session:
    """A new session for ``caller``, who logged in with key ``key_id``."""
    made = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(24), caller, key_id)
    async with backend.deadline():
        pipe = backend.redis.pipeline(transaction=True)
        pipe.hset(_key(made.token), mapping={"owner": caller.owner, "admin": "1" if caller.admin else "0",
                                              "csrf": made.csrf, "key_id": key_id})
        pipe.expire(_key(made.token), TTL)
        await pipe.execute()
    return made


async def current(backend: Backend, request: Request) -> Session | None:
    """The session the request's cookie names, if it is live."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 100:
        return None
    async with backend.deadline():
        stored = cast(dict[bytes, bytes], await backend.redis.hgetall(_key(token)))
        if not stored or not {b"owner", b"csrf", b"key_id"} <= stored.keys():
            return None
        key_id = stored[b"key_id"].decode()
        if not await backend.redis.exists(keys.apikey(key_id)):  # the key was revoked: so is this
            await backend.redis.delete(_key(token))
            return None
    caller = Caller(owner=stored[b"owner"].decode(), admin=stored.get(b"admin") == b"1")
    return Session(token, stored[b"csrf"].decode(), caller, key_id)


async def end(backend: Backend, request: Request, *, asked: bool = False) -> None:
    """Delete the request's session on the server. ``asked``: the page asked to log out, a
    change like any other, so a live session's CSRF token is due (``Forbidden`` without it:
    another page cannot log the user out)."""
    token = request.cookies.get(COOKIE)
    if asked:
        found = await current(backend, request)
        if found is not None and not found.allows(request):
            raise Forbidden("logging out of the dashboard must carry its session's X-CSRF-Token")
    if token and len(token) <= 100:
        async with backend.deadline():
            await backend.redis.delete(_key(token))


def set_cookie(request: Request, response: Response, token: str) -> None:
    """The session's cookie: HttpOnly, SameSite=Strict, Secure over https, for :data:`TTL`."""
    response.set_cookie(COOKIE, token, max_age=TTL, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_cookie(request: Request, response: Response) -> None:
    """Forget the session's cookie."""
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")

"""The dashboard: a small static app (``taskgate/ui/static``, plain JavaScript modules, no build
step, no network) served at ``/ui``, and its sessions.

With auth on, the page exchanges an API key for a session once (``POST /ui/session``): an
HttpOnly, SameSite=Strict cookie naming a session kept in Redis (the key itself is never stored
in the browser), which ``deps.get_caller`` accepts like the key, with a CSRF token required on
every request that changes something. Every page answer carries a strict Content-Security-Policy
(no inline script, nothing from another origin)."""

from __future__ import annotations

from html import escape
from importlib import resources
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from ... import auth
from ...exceptions import TaskGateError, TaskNotFound, Unauthorized
from .. import sessions
from ..deps import gate_of
from ..errors import TaskgateRoute
from ..schemas import errors

#: The page's policy: its own scripts, styles and API only; never framed.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
STATIC = resources.files("taskgate.ui").joinpath("static")
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".txt": "text/plain"}


class Login(BaseModel):
    """An API key, exchanged once for a session cookie."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=300)


class SessionInfo(BaseModel):
    """Who the page acts as. `auth`: whether it must log in; `csrf`: the token to send as
    `X-CSRF-Token` on every request that changes something; `trace_url`: where a task's page
    links its trace id (TASKGATE_TRACE_URL), once the page may read tasks."""

    auth: bool
    owner: str | None = None
    admin: bool = False
    csrf: str | None = None
    trace_url: str | None = Field(default=None, description="TASKGATE_TRACE_URL: a URL with "
                                  "`{trace_id}` where a task's `trace_id` goes (null: unset, or "
                                  "not logged in).")


async def _page(request: Request, rest: str = "") -> HTMLResponse:
    """index.html with its base: this request's path without the page's own part (``rest``),
    so assets and API calls resolve under whatever prefix the router is mounted at; and the
    session (as ``GET /ui/session`` answers), which saves the page a round trip before it can
    draw (left empty when Redis does not answer: the page then asks, and says what failed)."""
    path = request.url.path
    base = (path[: len(path) - len(rest)] if rest and path.endswith(rest) else path).rstrip("/") + "/"
    try:
        known = (await whoami(request)).model_dump_json()
    except TaskGateError:
        known = ""
    html = (STATIC.joinpath("index.html").read_text(encoding="utf-8").replace("{{base}}", base)
            .replace("{{session}}", escape(known, quote=True)))
    return HTMLResponse(html, headers={**HEADERS, "Cache-Control": "no-store"})


async def page(request: Request) -> HTMLResponse:
    """The dashboard (every page: the app routes by the path)."""
    return await _page(request)


async def page_at(request: Request, rest: Annotated[str, Path(alias="path")]) -> HTMLResponse:
    """The dashboard at a page's own address (a task's, to share)."""
    return await _page(request, rest)


async def asset(name: Annotated[str, Path(pattern=r"^[a-z0-9_-]+\.(js|css|svg|txt)$")]) -> Response:
    """One of the dashboard's files, shipped in the wheel."""
    file = STATIC.joinpath(name)
    if not file.is_file():
        raise TaskNotFound(name, "file")
    return Response(file.read_bytes(), media_type=TYPES[PurePosixPath(name).suffix],
                    headers={**HEADERS, "Cache-Control": "no-cache"})


async def whoami(request: Request) -> SessionInfo:
    """The page's session, if any."""
    gate = gate_of(request)
    trace_url = gate.settings.trace_url
    if not gate.auth or gate.owner is not None:
        return SessionInfo(auth=False, admin=gate.owner is None, trace_url=trace_url)
    found = await sessions.current(gate.producer.backend, request)
    if found is None:
        return SessionInfo(auth=True)
    return SessionInfo(auth=True, owner=found.caller.owner, admin=found.caller.admin, csrf=found.csrf,
                       trace_url=trace_url)


async def log_in(body: Login, request: Request, response: Response) -> SessionInfo:
    """Exchange an API key for a session cookie (HttpOnly, SameSite=Strict, Secure over https,
    8 hours). The key itself is not kept by the page; revoking it ends the session. Another
    site's page cannot log in (its Origin: see ``errors.refuse_cross_site``)."""
    gate = gate_of(request)
    parsed = auth.parse(body.key.strip())
    caller = None
    if parsed is not None:
        backend = gate.producer.backend
        async with backend.deadline():
            stored = await auth.lookup(backend.redis, parsed[0])
        caller = auth.verify(stored, parsed[1])
    if caller is None:
        raise Unauthorized("invalid or revoked API key")
    await sessions.end(gate.producer.backend, request)  # a session the browser had: over
    assert parsed is not None
    made = await sessions.create(gate.producer.backend, caller, parsed[0])
    sessions.set_cookie(request, response, made.token)
    return SessionInfo(auth=True, owner=caller.owner, admin=caller.admin, csrf=made.csrf,
                       trace_url=gate.settings.trace_url)


async def log_out(request: Request, response: Response) -> None:
    """End the session on the server and forget the cookie (with the session's X-CSRF-Token)."""
    await sessions.end(gate_of(request).producer.backend, request, asked=True)
    sessions.clear_cookie(request, response)


async def to_dashboard(request: Request) -> RedirectResponse:
    """The standalone API's front page is the dashboard."""
    return RedirectResponse(str(request.url.path).rstrip("/") + "/ui/", status_code=307)


def build_router(route_class: type[TaskgateRoute]) -> APIRouter:
    """The dashboard's routes, on a router of ``route_class`` routes (see ``api.router``)."""
    router = APIRouter(prefix="/ui", tags=["dashboard"], route_class=route_class)
    router.get("/session", summary="The dashboard's session", responses=errors(503))(whoami)
    router.post("/session", summary="Log the dashboard in with an API key",
                responses=errors(401, 403, 422, 503))(log_in)
    router.delete("/session", status_code=204, summary="Log the dashboard out",
                  responses=errors(403, 503))(log_out)
    router.get("/static/{name}", include_in_schema=False)(asset)
    router.get("", include_in_schema=False)(page)
    router.get("/", include_in_schema=False)(page)
    router.get("/{path:path}", include_in_schema=False)(page_at)
    return router

"""The one place where errors become HTTP answers, all in the ``ErrorResponse`` envelope."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message

from .. import validation
from ..constants import RETRY_AFTER_SECONDS
from ..exceptions import (
    BackendUnavailable,
    ConfigurationError,
    Conflict,
    FieldError,
    Forbidden,
    InvalidArguments,
    NoOverride,
    PayloadTooLarge,
    QuotaExceeded,
    ResultTimeout,
    TaskCancelled,
    TaskExpired,
    TaskFailed,
    TaskNotFound,
    Unauthorized,
    UnknownTask,
    WorkflowNotFound,
)
from . import sessions
from .deps import gate_of
from .schemas import ErrorResponse

if TYPE_CHECKING:
    from ..gate import Taskgate

log = logging.getLogger("taskgate.api")


def error_response(status: int, type_: str, message: str, *, retryable: bool = False,
                   headers: Mapping[str, str] | None = None, task_id: str | None = None,
                   errors: Sequence[FieldError] = (), extra: Mapping[str, Any] | None = None) -> JSONResponse:
    """A JSON error in the stable envelope; a 422's ``errors`` name each field (``loc``, ``msg``,
    ``type``), so a client needs no parsing of the message; ``extra``: more fields of the error
    (a submit's ``outcome``, a failed task's ``task_error``)."""
    error: dict[str, Any] = {"type": type_, "message": message, "retryable": retryable}
    if task_id is not None:
        error["task_id"] = task_id
    if errors:
        error["errors"] = [{"loc": list(one.loc), "msg": one.msg, "type": one.type} for one in errors]
    error.update(extra or {})
    body = {"error": error}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """Validation errors (pydantic's or FastAPI's dicts) as one message: each field with what is
    wrong with it (``validation.describe``)."""
    return validation.describe(validation.field_errors(errors))


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    kind = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
    if (any(tuple(error.get("loc", ())) == ("body",) for error in exc.errors())
            and not (kind == "application/json" or kind.endswith("+json"))):
        # FastAPI reads only a JSON content type as JSON: say so rather than "not a dictionary"
        return error_response(422, "invalid_request", "body: send it as JSON, with Content-Type: "
                              f"application/json (it came as {kind or 'no content type'})")
    found = validation.field_errors(exc.errors())
    return error_response(422, "invalid_request", validation.describe(found), errors=found)


async def _invalid_arguments(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidArguments)
    return error_response(422, "invalid_request", str(exc), errors=exc.errors)


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "task_not_found", str(exc))


async def _workflow_not_found(_: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "workflow_not_found", str(exc))


async def _unknown_task(_: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "unknown_task", str(exc))


async def _no_override(_: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "no_override", str(exc))


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return error_response(409, "conflict", str(exc))


async def _too_large(_: Request, exc: Exception) -> JSONResponse:
    return error_response(413, "payload_too_large", str(exc))


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BackendUnavailable)
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    # a submit's says what became of its task in ``outcome`` (see Unavailable)
    return error_response(503, "backend_unavailable", f"{exc}; retry later", retryable=True,
                          headers={"Retry-After": str(RETRY_AFTER_SECONDS)}, task_id=exc.task_id,
                          extra={"outcome": exc.outcome} if exc.outcome is not None else None)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:  # FastAPI could not read the body (not UTF-8): a 422 like any bad JSON
        return error_response(422, "invalid_request", f"body: {exc.detail}: send JSON in UTF-8")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = allowed_methods(request, headers.get("Allow", ""))
    kind = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(exc.status_code,
                                                                                      "http_error")
    return error_response(exc.status_code, kind, str(exc.detail), headers=headers)


def allowed_methods(request: Request, fallback: str) -> str:
    """The methods this path answers, for a 405's ``Allow``. Starlette names only those of the
    first route whose path matches (``POST /tasks/{name}`` for ``/tasks/<id>``); here, those the
    OpenAPI document gives the path, the concrete path before a template (``/tasks/add`` is the
    submit route, not a task id), as OpenAPI matches paths. ``fallback`` for undocumented paths."""
    path = request.url.path
    found: list[tuple[int, list[str]]] = []
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "/".join("[^/]+" if part.startswith("{") else re.escape(part)
                            for part in template.split("/"))
        if re.fullmatch(pattern, path):
            found.append((template.count("{"), [method.upper() for method in operations]))
    if not found:
        return fallback
    fewest = min(params for params, _ in found)
    methods = {method for params, names in found if params == fewest for method in names}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


async def _unauthorized(_: Request, exc: Exception) -> JSONResponse:
    return error_response(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})


async def _forbidden(_: Request, exc: Exception) -> JSONResponse:
    return error_response(403, "forbidden", str(exc))


async def _quota(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QuotaExceeded)
    return error_response(429, "quota_exceeded", str(exc), retryable=True,
                          headers={"Retry-After": str(exc.retry_after)})


async def _misconfigured(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return error_response(500, "configuration_error", str(exc))


Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]

#: Each error taskgate raises on purpose, and its answer.
HANDLERS: dict[type[Exception], Handler] = {
    RequestValidationError: _validation,
    TaskNotFound: _not_found,
    WorkflowNotFound: _workflow_not_found,
    InvalidArguments: _invalid_arguments,
    UnknownTask: _unknown_task,
    NoOverride: _no_override,
    Conflict: _conflict,
    PayloadTooLarge: _too_large,
    Unauthorized: _unauthorized,
    Forbidden: _forbidden,
    QuotaExceeded: _quota,
    BackendUnavailable: _unavailable,
    ConfigurationError: _misconfigured,
    HTTPException: _http,
}


async def _task_failed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TaskFailed)
    return error_response(502, "task_failed", str(exc), retryable=exc.error.get("retryable") is True,
                          task_id=exc.task_id, extra={"task_error": exc.error})


async def _task_cancelled(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TaskCancelled)
    return error_response(409, "task_cancelled", str(exc), task_id=exc.task_id)


async def _task_expired(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TaskExpired)
    return error_response(409, "task_expired", str(exc), task_id=exc.task_id, extra={"task_error": exc.error})


async def _result_timeout(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ResultTimeout)
    return error_response(504, "task_timeout", f"{exc}; it goes on: ask for it again by its task_id "
                          "(a new request would run the work again)", task_id=exc.task_id)


#: What ``await job.result()`` raises in an app's own routes (never in taskgate's router):
#: the task failed (502, its own error in ``task_error``), was cancelled (409), expired before it
#: started (409 ``task_expired``, the record's error in ``task_error``), or has not ended in time
#: (504, with the id to ask again).
RESULT_HANDLERS: dict[type[Exception], Handler] = {
    TaskFailed: _task_failed,
    TaskCancelled: _task_cancelled,
    TaskExpired: _task_expired,
    ResultTimeout: _result_timeout,
}


def install(app: FastAPI, *, validation: bool = False) -> None:
    """Register every error mapping on ``app`` (``Taskgate.install_error_handlers``), those of
    :data:`RESULT_HANDLERS` too; FastAPI's own 422 for a request that fails validation only when
    ``validation`` (taskgate's router answers its own in the envelope either way)."""
    for kind, handler in (HANDLERS | RESULT_HANDLERS).items():
        if kind is not RequestValidationError or validation:
            app.add_exception_handler(kind, handler)


#: The attribute :func:`direct` sets on an endpoint.
DIRECT = "__taskgate_direct__"

E = TypeVar("E", bound=Callable[..., Any])


def direct(endpoint: E) -> E:
    """Mark a route's endpoint as taking only the request and returning a ``Response`` itself
    (it reads its parameters by hand, for speed): the service app may call it, behind the same
    guards, without FastAPI's routing and request handling (``api.app.ServiceApp``)."""
    setattr(endpoint, DIRECT, True)
    return endpoint


class TaskgateRoute(APIRoute):
    """The route class of taskgate's routers (``api.router`` makes one per Taskgate, naming it
    in :attr:`gate`). A route hands its request the Taskgate that built it (``scope["taskgate"]``,
    read by ``deps.gate_of``), so it needs no app state; answers taskgate's errors itself, as
    :data:`HANDLERS` says, so the router keeps its envelope (and its 503 + Retry-After) in any
    app that includes it, whatever handlers that app has; caps request bodies at
    TASKGATE_MAX_BODY_BYTES (:func:`capped`), unless :attr:`caps_body` says the route caps its
    own (uploads); drops a request whose client went away before sending its whole body, in one
    line (:func:`disconnected`); and refuses a change asked by another site's page
    (:func:`refuse_cross_site`): a request of any method but GET, HEAD and OPTIONS, or of a route
    that :attr:`changes_state` on a GET (``GET /add``), which also needs the dashboard session's
    CSRF token."""

    #: The Taskgate whose router this route is on.
    gate: Taskgate | None = None
    caps_body = False
    #: A GET route that changes something (``GET /add`` queues a task): guarded like a POST.
    changes_state = False
    #: Where the routes of :func:`direct` endpoints register their guarded endpoint, by (method,
    #: path) (``api.router`` gives each Taskgate's route class one; the service app serves them
    #: from it, see ``api.app.ServiceApp``).
    direct: ClassVar[dict[tuple[str, str], Callable[[Request], Coroutine[Any, Any, Response]]] | None] = None

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        # What the guards below answer is in the route's OpenAPI too (the route's own wins).
        methods = {method.upper() for method in kwargs.get("methods") or ("GET",)}
        guards: dict[int | str, dict[str, Any]] = {}
        if self.changes_state or methods - sessions.SAFE:
            guards[403] = {"model": ErrorResponse, "description": "A change asked by another site's page "
                           "(its Sec-Fetch-Site or Origin), or a dashboard session's request without "
                           "its X-CSRF-Token."}
        if not self.caps_body and methods - {"GET", "HEAD", "DELETE"}:
            guards[413] = {"model": ErrorResponse,
                           "description": "The request body is larger than TASKGATE_MAX_BODY_BYTES."}
        kwargs["responses"] = {**guards, **(kwargs.get("responses") or {})}
        super().__init__(path, endpoint, **kwargs)
        if self.direct is not None and getattr(endpoint, DIRECT, False):
            for method in self.methods or ():
                self.direct[(method, self.path)] = self.guarded(endpoint)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return self.guarded(super().get_route_handler())

    def guarded(self, handle: Callable[[Request], Coroutine[Any, Any, Response]]
                ) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """``handle`` with this route's guards and error mapping (see the class's docstring)."""
        gate = self.gate
        cap = not self.caps_body and bool(self.methods and self.methods - {"GET", "HEAD", "DELETE"})
        changes = self.changes_state or bool(self.methods and self.methods - sessions.SAFE)
        template = self.path

        async def handle_errors(request: Request) -> Response:
            try:
                if gate is not None:
                    request.scope["taskgate"] = gate
                if changes:
                    request.scope[sessions.CHANGES] = True  # a session's CSRF token is due
                # a key is sent by scripts, never by a page unasked (when auth reads it)
                if changes and not (gate_of(request).auth and "authorization" in request.headers):
                    refuse_cross_site(request)
                if cap:
                    request = capped(request, gate_of(request).settings.max_body_bytes)
                return await handle(request)
            except Exception as exc:
                if disconnected(exc):
                    log.info("%s %s: the client disconnected before sending the whole request body; "
                             "request dropped, nothing done", request.method, template)
                    return Response(status_code=499)  # nginx's "client closed request", sent to no one
                for kind in type(exc).__mro__:
                    handler = HANDLERS.get(kind)
                    if handler is not None:
                        return await handler(request, exc)
                raise

        return handle_errors


def disconnected(exc: BaseException) -> bool:
    """Whether ``exc`` says the client went away before its request body was read whole:
    starlette's ``ClientDisconnect`` from ``request.body()`` or ``request.stream()``, which
    FastAPI turns into a 400 ``HTTPException`` caused by it when it reads the body itself. The
    route did nothing yet (its body comes before any change; an upload's partial file is
    removed): a client's doing, not the server's error, so no traceback."""
    return isinstance(exc, ClientDisconnect) or isinstance(exc.__cause__, ClientDisconnect)


def refuse_cross_site(request: Request) -> None:
    """``Forbidden`` when a browser sent this request from another site's page. A browser says
    where a request comes from: ``Sec-Fetch-Site`` (``same-origin`` and ``none``, typed or
    bookmarked, pass; ``same-site``, a page on another port or subdomain, is another origin and
    is refused), else ``Origin``, which must name the request's host (``Host``, or the first
    ``X-Forwarded-Host`` a proxy set; case and default ports aside). It sends them even on
    requests a page may send unasked (a form, an ``<img>``, a no-cors fetch with a body not
    labelled as JSON), and with auth off nothing else would tell such a request from the
    user's own. A GET from another page names no Origin: its Sec-Fetch-Site refuses it.
    Scripts send neither."""
    site = request.headers.get("sec-fetch-site")
    if site in ("same-origin", "none"):
        return
    origin = request.headers.get("origin")
    if origin is None and site is None:
        return  # not a browser (or one too old to say): no page of another site sent it
    if origin is not None and origin != "null":
        parts = urlsplit(origin.lower())
        default = {"http": 80, "https": 443}.get(parts.scheme)
        try:
            port = parts.port
        except ValueError:
            port = None
        named = f"{parts.hostname}" + (f":{port}" if port is not None and port != default else "")
        forwarded = request.headers.get("x-forwarded-host", "").split(",")[0]
        hosts = {_bare(request.headers.get("host", "")), _bare(forwarded)} - {""}
        if named in hosts:
            return
    raise Forbidden(f"a change asked by another site's page ({origin or site}) is refused: taskgate's "
                    "own pages and scripts may make changes")


def _bare(host: str) -> str:
    """A Host header as compared with an Origin: lower case, without a default port."""
    host = host.strip().lower()
    for default in (":80", ":443"):
        host = host.removesuffix(default)
    return host


def capped(request: Request, limit: int) -> Request:
    """``request`` refused with 413 past ``limit`` bytes: at once when its Content-Length says
    so; else (a chunked body) as the body is read."""
    length = next((value for name, value in request.scope["headers"] if name == b"content-length"), None)
    if length is not None:
        if length.isdigit() and int(length) > limit:
            raise _too_large_body(limit)
        return request  # the server delivers no more than it declared
    receive, seen = request.receive, 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _too_large_body(limit)
        return message

    return Request(request.scope, counted, request._send)


def _too_large_body(limit: int) -> HTTPException:
    # An HTTPException, which FastAPI lets through when reading a body it validates itself.
    return HTTPException(413, f"request body is larger than {limit} bytes (TASKGATE_MAX_BODY_BYTES)")

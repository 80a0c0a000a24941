"""OpenTelemetry traces across the queue: the one module that touches OpenTelemetry's trace API.

taskgate traces through the tracer provider the process has: the one a user's app set up
(``opentelemetry-instrument``, the SDK by hand, FastAPI's instrumentation), or the one
``taskgate api``/``worker`` set up with ``TASKGATE_OTEL=on`` (``service.telemetry``), or, while
the process has no global one, the provider of taskgate's own that :func:`use` gave it (a
prefork worker's main process: its pool processes, forked from it, set up their own global
ones). Without any, or without OpenTelemetry installed (``pip install 'taskgate[otel]'``),
:func:`active` is False and every function here does nothing and costs next to nothing.

What travels: a run's enqueue is a PRODUCER span ``taskgate submit <task>``
(:func:`producer_span`), current while its Celery message is built, so the message's headers
carry its W3C ``traceparent``/``tracestate`` (:func:`inject`, at the top level of the protocol-2
headers, where ``opentelemetry-instrumentation-celery`` reads and writes them); the record keeps
its trace id (:func:`trace_id`). The worker continues that trace in a CONSUMER span ``taskgate
run <task>`` (:func:`consumer_span`), with :func:`event` for what happens while it runs and
:func:`failed` for an exception. The service's own fast path answers a request in a SERVER span
(:func:`server_span`) honouring an incoming ``traceparent``. Attributes follow OpenTelemetry's
messaging conventions (system ``celery``, destination the queue, message id the task id) plus
``taskgate.task.name``, ``taskgate.attempt`` and ``taskgate.owner``.

Enqueues that are not a request's (a schedule's tick, a replay, a batch item, a workflow's node)
pass :func:`link` values to :func:`producer_span` (``links=``), or a remote parent (``parent=``,
a carrier such as a message's headers), or start a trace of their own (``root=True``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypedDict

from . import __version__

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.propagators.textmap import Getter
    from opentelemetry.trace import Link as Link  # re-exported: the type of links= here
    from opentelemetry.trace import Span as Span  # and of a span yielded here
    from opentelemetry.trace import SpanContext, SpanKind, StatusCode, TraceFlags
except ImportError:  # the extra is not installed: every function below is a no-op
    INSTALLED = False
else:
    INSTALLED = True

    #: Providers that record nothing: the API's default (a proxy until one is set) and its no-op.
    _DEFERRED = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)

    class _AttributeGetter(Getter[Any]):
        """Reads a carrier's fields as attributes: a Celery request (``task.request``) has its
        message's headers as attributes, as ``opentelemetry-instrumentation-celery`` reads them."""

        def get(self, carrier: Any, key: str) -> list[str] | None:
            value = getattr(carrier, key, None)
            return [value] if isinstance(value, str) else None

        def keys(self, carrier: Any) -> list[str]:
            return []

    class _ScopeGetter(Getter[Mapping[str, Any]]):
        """Reads an ASGI scope's request headers (latin-1 bytes, names lower case)."""

        def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
            name = key.lower().encode("latin-1")
            found = [value.decode("latin-1") for field, value in carrier.get("headers", ()) if field == name]
            return found or None

        def keys(self, carrier: Mapping[str, Any]) -> list[str]:
            return [field.decode("latin-1") for field, _ in carrier.get("headers", ())]

    _ATTRIBUTES = _AttributeGetter()
    _SCOPE = _ScopeGetter()

#: What a disabled span context manager yields.
_NOTHING: AbstractContextManager[None] = nullcontext()
#: The messaging system of every span here (OpenTelemetry's messaging conventions).
SYSTEM = "celery"
_tracer_of: tuple[object, Any] | None = None


def active() -> bool:
    """Whether spans are recorded: OpenTelemetry is installed and a real tracer provider is set
    (not the API's default proxy or its no-op), or taskgate's own (:func:`use`). Cheap: asked
    on every submit, so it reads the API's global itself (``trace.get_tracer_provider()`` looks
    the environment up first, each call: 0.86 µs against 0.08), going through the API only
    where the provider comes from OTEL_PYTHON_TRACER_PROVIDER (the API loads it on first use),
    taskgate's own may be there, or the API has changed."""
    if not INSTALLED:
        return False
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is None and not _LOOK_FURTHER:
        return False
    if provider is None or provider is _UNKNOWN:
        provider = trace.get_tracer_provider()
    return not isinstance(provider, _DEFERRED) or _own is not None


#: A value no provider is: the API's global is not where :func:`active` looks for it.
_UNKNOWN = object()
#: Whether this process's tracer provider is named by the environment (read at startup).
_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
#: The provider of taskgate's own for this process (:func:`use`), None without one.
_own: Any = None
#: Whether a process without a global provider may still have one: named by the environment,
#: or taskgate's own.
_LOOK_FURTHER = _PROVIDER_FROM_ENV


def use(provider: Any) -> None:
    """Trace through ``provider`` in this process while no global tracer provider is set (None:
    stop). For a process whose children, forked from it, set up global providers of their own,
    which OpenTelemetry's API sets once per process: a prefork worker's main process, where the
    keeper fires schedules' ticks (``service.telemetry.for_worker``). Spans made through it
    are current as any: they travel in messages' headers and parent the spans made inside."""
    global _own, _LOOK_FURTHER
    _own = provider
    _LOOK_FURTHER = _PROVIDER_FROM_ENV or provider is not None


def _tracer() -> trace.Tracer:
    """taskgate's tracer from the current provider (kept while the provider stays the same):
    the global one, else taskgate's own (:func:`use`)."""
    global _tracer_of
    provider = trace.get_tracer_provider()
    if _own is not None and isinstance(provider, _DEFERRED):
        provider = _own
    if _tracer_of is None or _tracer_of[0] is not provider:
        _tracer_of = (provider, provider.get_tracer("taskgate", __version__))
    tracer: trace.Tracer = _tracer_of[1]
    return tracer


def current_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id (32 and 16 lower-case hex digits), as log lines
    carry them; None without one (cheap: asked for every JSON log line)."""
    if not INSTALLED:
        return None
    found = trace.get_current_span().get_span_context()
    return (format(found.trace_id, "032x"), format(found.span_id, "016x")) if found.is_valid else None


class RecordIds(TypedDict, total=False):
    """A run's trace and its submit's span, as its record keeps them."""

    trace_id: str
    span_id: str


def record_ids() -> RecordIds:
    """The current span's ids as a record keeps them (``trace_id``, ``span_id``: the run's trace,
    and the submit span a replay or requeue of it links to); empty without one."""
    ids = current_ids()
    return {"trace_id": ids[0], "span_id": ids[1]} if ids else {}


def carried_trace_id(request: Any) -> str:
    """The trace id a Celery ``request``'s message carries (its ``traceparent`` header, read
    as ``opentelemetry-instrumentation-celery`` reads it; or a mapping of the message's
    headers), '' without one: for what is logged about a task outside its span."""
    if not INSTALLED:
        return ""
    found = trace.get_current_span(_context(request, False)).get_span_context()
    return format(found.trace_id, "032x") if found.is_valid else ""


def inject(headers: MutableMapping[str, Any]) -> None:
    """Put the current trace context (W3C ``traceparent`` and ``tracestate``, or the
    propagators the process configured) into a message's ``headers``, when a span is current
    (cheap without one: a submit with tracing off asks)."""
    if INSTALLED and trace.get_current_span().get_span_context().is_valid:
        propagate.inject(headers)


def link(trace_id: str, span_id: str | None = None,
         attributes: Mapping[str, str | int] | None = None) -> Link | None:
    """A link to another trace, for :func:`producer_span`'s ``links``: a record's ``trace_id``
    (32 hex digits) and, when known, the span's id (16 hex); without one the link names the
    trace only (span id zero, and ``taskgate.trace_id`` among its ``attributes``, which keeps
    it). None when not :func:`active` or an id is malformed."""
    if not active():
        return None
    try:
        context = SpanContext(int(trace_id, 16), int(span_id, 16) if span_id else 0, is_remote=True,
                              trace_flags=TraceFlags(TraceFlags.SAMPLED))
    except ValueError:
        return None
    given = dict(attributes or {})
    if not span_id:
        given["taskgate.trace_id"] = trace_id
    return Link(context, given or None)


def _messaging(task: str, task_id: str, queue: str, operation: str, owner: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM, "messaging.destination.name": queue, "messaging.message.id": task_id,
        "messaging.operation.type": operation, "taskgate.task.name": task,
    }
    if owner is not None:
        attributes["taskgate.owner"] = owner
    return attributes


def producer_span(task: str, task_id: str, queue: str, *, owner: str | None = None,
                  links: Iterable[Link | None] = (), parent: Any = None,
                  root: bool = False) -> AbstractContextManager[Span | None]:
    """The PRODUCER span ``taskgate submit <task>`` of one run's enqueue, current inside (build
    the run's message there: its headers then carry this span). Its parent is the current span
    (the submitting request's), or ``parent`` (a carrier: a mapping of headers or an object
    with them as attributes), or none with ``root`` (a new trace, e.g. a schedule's tick);
    ``links``: :func:`link` values (None ones are dropped). An exception leaving it is
    recorded and sets its status to ERROR. Yields None while not :func:`active`."""
    if not active():
        return _NOTHING
    if root:
        context = otel_context.Context()
    elif parent is not None:
        context = (propagate.extract(parent) if isinstance(parent, Mapping)
                   else propagate.extract(parent, getter=_ATTRIBUTES))
    else:
        context = None
    return _tracer().start_as_current_span(
        f"taskgate submit {task}", context=context, kind=SpanKind.PRODUCER,
        attributes=_messaging(task, task_id, queue, "send", owner),
        links=[one for one in links if one is not None])


@contextmanager
def _consuming(request: Any, task: str, task_id: str, queue: str, attempt: int,
               owner: str | None) -> Iterator[Span]:
    # A span already current (opentelemetry-instrumentation-celery's run span) continued the
    # trace; else it is continued from the message's headers.
    current = trace.get_current_span().get_span_context().is_valid
    context = None if current else propagate.extract(request, getter=_ATTRIBUTES)
    attributes = _messaging(task, task_id, queue, "process", owner)
    attributes["taskgate.attempt"] = attempt
    with _tracer().start_as_current_span(f"taskgate run {task}", context=context, kind=SpanKind.CONSUMER,
                                         attributes=attributes, record_exception=False,
                                         set_status_on_exception=False) as span:
        yield span


def consumer_span(request: Any, task: str, task_id: str, queue: str, *, attempt: int,
                  owner: str | None = None) -> AbstractContextManager[Span | None]:
    """The CONSUMER span ``taskgate run <task>`` of one attempt (``attempt``, from 1), current
    inside: continues the trace of the Celery ``request``'s message (its ``traceparent``
    header), or of a span already current. Exceptions leaving it are not recorded by it (a
    retry or a skip is Celery's control flow): call :func:`failed`. None while not
    :func:`active`."""
    if not active():
        return _NOTHING
    return _consuming(request, task, task_id, queue, attempt, owner)


def event(name: str, attributes: Mapping[str, str | int | float | bool] | None = None) -> None:
    """Add event ``name`` to the current span, when one is recording."""
    if INSTALLED:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes)


def annotate(**attributes: str | int | float | bool) -> None:
    """Set attributes on the current span (dots spelled as ``__``: ``taskgate__owner``)."""
    if INSTALLED:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes({key.replace("__", "."): value for key, value in attributes.items()})


def failed(exc: BaseException, *, final: bool = True) -> None:
    """Record ``exc`` on the current span; ``final``: the operation failed (status ERROR)."""
    if INSTALLED:
        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(exc)
            if final:
                span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")


@contextmanager
def _serving(scope: Mapping[str, Any], route: str) -> Iterator[Span]:
    method = scope["method"]
    attributes: dict[str, Any] = {"http.request.method": method, "http.route": route,
                                  "url.path": scope["path"], "url.scheme": scope.get("scheme", "http")}
    server = scope.get("server")
    if server:
        attributes["server.address"], attributes["server.port"] = server[0], server[1]
    with _tracer().start_as_current_span(f"{method} {route}", context=propagate.extract(scope, getter=_SCOPE),
                                         kind=SpanKind.SERVER, attributes=attributes) as span:
        yield span


def server_span(scope: Mapping[str, Any], route: str) -> AbstractContextManager[Span | None]:
    """The SERVER span of an HTTP request (an ASGI ``scope``) for ``route`` that the service
    answers without FastAPI's router, current inside: its parent is the request's
    ``traceparent``, if any. None while not :func:`active`."""
    if not active():
        return _NOTHING
    return _serving(scope, route)


def responded(span: Span, status: int) -> None:
    """Record a SERVER span's response status (a 5xx is an error)."""
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)


# --- enqueues that are not one request's single submit -----------------------------------------

def _context(parent: Any, root: bool) -> Any:
    """The parent context of a new span: none (``root``), a carrier's, or the current one."""
    if root:
        return otel_context.Context()
    if parent is None:
        return None
    return (propagate.extract(parent) if isinstance(parent, Mapping)
            else propagate.extract(parent, getter=_ATTRIBUTES))


def start_producer(task: str, task_id: str, queue: str, *, owner: str | None = None,
                   links: Iterable[Link | None] = ()) -> Span | None:
    """A PRODUCER span as :func:`producer_span` makes it (the current span's child), started
    but not made current: for one run among several sent in one round trip (a batch's items,
    each its own span). Build its message inside :func:`current`, then :func:`finish` it once
    the round trip answered. None while not :func:`active`."""
    if not active():
        return None
    return _tracer().start_span(f"taskgate submit {task}", kind=SpanKind.PRODUCER,
                                attributes=_messaging(task, task_id, queue, "send", owner),
                                links=[one for one in links if one is not None])


def current(span: Span | None) -> AbstractContextManager[Any]:
    """Make ``span`` (from :func:`start_producer`) current inside, without ending it."""
    if span is None:
        return _NOTHING
    return trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False)


def finish(span: Span | None, exc: BaseException | None = None) -> None:
    """End ``span`` (from :func:`start_producer`); ``exc``: why its run was not queued."""
    if span is None:
        return
    if exc is not None:
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
    span.end()


def traceparent() -> str:
    """The current span's W3C ``traceparent`` ('' without one): kept where a later enqueue
    continues it (a workflow's hash, a schedule's)."""
    if not INSTALLED:
        return ""
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return ""
    return f"00-{found.trace_id:032x}-{found.span_id:016x}-{int(found.trace_flags):02x}"


def link_to(traceparent: str, attributes: Mapping[str, str | int] | None = None) -> Link | None:
    """A :func:`link` to the span a ``traceparent`` names (None when malformed)."""
    parts = traceparent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    return link(parts[1], parts[2], attributes)


def here(attributes: Mapping[str, str | int] | None = None) -> Link | None:
    """A :func:`link` to the current span (None without one)."""
    return link_to(traceparent(), attributes) if active() else None


def workflow_span(name: str, workflow_id: str, *, owner: str | None = None, parent: Any = None,
                  links: Iterable[Link | None] = ()) -> AbstractContextManager[Span | None]:
    """The span ``taskgate submit workflow <name>`` of a workflow's submit (or run again),
    current inside: each node's PRODUCER span is its child, whenever its run is released. Its
    parent is the current span, or ``parent`` (a carrier: the workflow's first submit, for a
    run again). None while not :func:`active`."""
    if not active():
        return _NOTHING
    attributes: dict[str, Any] = {"taskgate.workflow.id": workflow_id, "taskgate.workflow.name": name}
    if owner is not None:
        attributes["taskgate.owner"] = owner
    return _tracer().start_as_current_span(
        f"taskgate submit workflow {name}", context=_context(parent, False), kind=SpanKind.INTERNAL,
        attributes=attributes, links=[one for one in links if one is not None])


def client_span(method: str, url: str, *, root: bool = False, links: Iterable[Link | None] = (),
                attributes: Mapping[str, str | int] | None = None) -> AbstractContextManager[Span | None]:
    """The CLIENT span of an outgoing HTTP request (a webhook delivery's attempt), current
    inside (:func:`inject` then puts it in the request's headers, so the receiver continues
    it); ``root``: a trace of its own; with HTTP's ``server.address`` and ``server.port``,
    ``url.full`` the URL's origin only (its path or query may hold the receiver's secret), and
    ``attributes``. Record the answer with :func:`answered`. None while not
    :func:`active`."""
    if not active():
        return _NOTHING
    from urllib.parse import urlsplit

    parts = urlsplit(url)  # its origin only: a receiver's path or query may hold its secret
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    given: dict[str, Any] = {"http.request.method": method, "server.address": host, "server.port": port,
                             "url.full": f"{parts.scheme}://{host}:{port}/"}
    given.update(attributes or {})
    return _tracer().start_as_current_span(method, context=_context(None, root), kind=SpanKind.CLIENT,
                                           attributes=given, links=[one for one in links if one is not None])


def answered(span: Span, status: int | None, error: str = "") -> None:
    """Record an HTTP client span's answer: its ``status`` (None: none came) and ``error``
    (what went wrong, '' if nothing); an error, no answer or a status of 400 and up sets the
    span's status to ERROR (HTTP's client conventions)."""
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if error or status is None or status >= 400:
        span.set_status(StatusCode.ERROR, error or f"HTTP {status}")

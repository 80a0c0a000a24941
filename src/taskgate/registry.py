"""The allow-list of exposed tasks, declared with ``@taskgate.task`` (see ``declare``).

Each declared function becomes a Celery task (over ``shared_task``) and a :class:`TaskSpec`
holding the Pydantic model generated from its signature (the HTTP request body) and the
type of its return value (the typed result). Only tasks in this registry can be submitted
over HTTP; any other Celery task, registered or not, cannot.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import os
import random
import re
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, get_type_hints

import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model

from . import limits, validation
from .exceptions import InvalidArguments
from .limits import Concurrency, RateLimit
from .schedule import Timing

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: Names the /tasks routes use themselves.
RESERVED_NAMES = frozenset({"catalogue", "results", "cancel", "replay"})


@dataclass(frozen=True)
class RetryPolicy:
    """When and how a task is tried again: exponential backoff with full jitter."""

    #: Exception types that are transient: only these are retried.
    transient: tuple[type[BaseException], ...] = ()
    #: Retries after the first attempt (so at most ``max_retries + 1`` attempts).
    max_retries: int = 3
    #: Backoff base in seconds: retry ``n`` waits ``uniform(0, min(max_delay, backoff * 2**n))``.
    backoff: float = 1.0
    #: Upper bound of any single wait, in seconds.
    max_delay: float = 60.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): full jitter."""
        return random.uniform(0, min(self.max_delay, self.backoff * 2**retry))

    def is_transient(self, exc: BaseException) -> bool:
        """True when ``exc`` is worth another attempt (never a result too large, even when
        ``transient`` names ``ValueError``: running again returns the same result)."""
        return isinstance(exc, self.transient) and not isinstance(exc, ResultTooLarge)


@dataclass(frozen=True)
class TaskSpec:
    """An exposed task: its public name, Celery name, argument model and result type."""

    name: str
    celery_name: str
    #: The declared function (a coroutine function for an ``async def`` task).
    func: Callable[..., Any]
    args_model: type[BaseModel]
    result_type: Any
    retry: RetryPolicy
    queue: str | None
    summary: str
    description: str
    result_adapter: TypeAdapter[Any] = field(repr=False)
    #: A schedule declared with the task (``@taskgate.task(schedule=...)``), created or updated
    #: by every worker that starts with it.
    schedule: Timing | None = None
    #: The declared cluster-wide rate limit (``@taskgate.task(rate_limit=..., rate_key=...,
    #: burst=...)``), if any.
    rate: RateLimit | None = None
    #: The declared concurrency limit (``@taskgate.task(concurrency=...)``), if any.
    concurrency: Concurrency | None = None
    #: Seconds after its submission a run of the task expires unless it started by then
    #: (``@taskgate.task(expires=...)``); None: it never expires.
    expires: float | None = None

    @property
    def is_async(self) -> bool:
        """True for an ``async def`` task (run on the worker process's event loop)."""
        return inspect.iscoroutinefunction(self.func)

    def load_result(self, value: Any) -> Any:
        """A stored (JSON) result as the declared return type: a model again for a task that
        returns one."""
        return self.result_adapter.validate_python(value)

    def dump_result(self, value: Any, max_bytes: int | None = None) -> Any:
        """The result as JSON-compatible data, checked against the declared return type; a
        non-finite float (which JSON would carry as null) or an integer beyond 64 bits raises
        :class:`ResultNotSerializable`, and a result whose JSON is longer than ``max_bytes``
        (``TASKGATE_MAX_RESULT_BYTES`` in the worker) :class:`ResultTooLarge`."""
        dumped = self.result_adapter.dump_python(self.result_adapter.validate_python(value), mode="json")
        bad = _non_finite(dumped)
        if bad is not None:
            raise ResultNotSerializable(f"the task returned {bad!r} in its result, which JSON cannot carry "
                                        "(it would read as null); return a finite number, a string or null")
        try:  # what the record cannot store (an integer beyond 64 bits) fails the task, not its record
            size = len(orjson.dumps(dumped))
        except orjson.JSONEncodeError as exc:
            raise ResultNotSerializable(f"the task's result cannot be stored as JSON ({exc}): integers must "
                                        "fit in 64 bits (return a larger one as a string)") from None
        if max_bytes is not None and size > max_bytes:
            raise ResultTooLarge(f"the task returned a result of {size:,} bytes, more than "
                                 f"TASKGATE_MAX_RESULT_BYTES ({max_bytes:,}): store big outputs in a file "
                                 "(taskgate's files API, or your own storage) and return its id")
        return dumped


class ResultNotSerializable(ValueError):
    """Raised in the worker when a task's result holds NaN or an infinity."""


class ResultTooLarge(ValueError):
    """Raised in the worker when a task's result, as JSON, is longer than
    ``TASKGATE_MAX_RESULT_BYTES``; the task fails, never retried (it would return the same)."""


def _non_finite(value: Any) -> float | None:
    """The first NaN or infinity in JSON-compatible ``value``, if any."""
    if isinstance(value, float):
        return None if math.isfinite(value) else value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            bad = _non_finite(item)
            if bad is not None:
                return bad
    return None


#: Public name -> spec. Filled by ``@taskgate.task`` at import time of task modules.
_REGISTRY: dict[str, TaskSpec] = {}


def _title(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def build_spec(func: Callable[..., Any], name: str, celery_name: str, retry: RetryPolicy,
               queue: str | None, schedule: Timing | None = None, *, rate_limit: str | None = None,
               rate_key: str | None = None, burst: int | None = None, concurrency: Concurrency | None = None,
               expires: float | timedelta | None = None) -> TaskSpec:
    """Read ``func``'s signature and type hints into a :class:`TaskSpec`, with its declared
    limits checked (see :mod:`taskgate.limits`): ``TypeError``/``ValueError`` naming the task."""
    hints = get_type_hints(func, include_extras=True)
    if "return" not in hints:
        raise TypeError(f"task {name!r}: annotate the return type of {func.__qualname__}")
    fields: dict[str, Any] = {}
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(f"task {name!r}: *args/**kwargs cannot be exposed; name each argument")
        if param.name not in hints:
            raise TypeError(f"task {name!r}: annotate argument {param.name!r}")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hints[param.name], default)
    doc = inspect.getdoc(func) or f"Run the {name} task."
    summary, _, description = doc.partition("\n")
    args_model = create_model(
        f"{_title(name)}Args",
        # Floats are finite (no NaN, Infinity, 1e999): JSON cannot carry them to the worker. The
        # API also validates bodies strictly (no true for 1).
        __config__=ConfigDict(extra="forbid", title=f"{_title(name)}Args", allow_inf_nan=False),
        __doc__=f"Arguments of the {name} task.",
        **fields,
    )
    for arg, info in args_model.model_fields.items():
        if any(getattr(meta, "allow_inf_nan", False) for meta in info.metadata):
            raise TypeError(f"task {name!r}: argument {arg!r} allows NaN or infinities, which JSON "
                            "cannot carry from the API to the worker (they would arrive as null)")
    if schedule is not None:
        try:  # a declared schedule's arguments are checked where they are written, as any
            validation.arguments(args_model, schedule.arguments)
        except InvalidArguments as exc:
            raise InvalidArguments(f"task {name!r}: the arguments of its schedule do not fit its signature: "
                                   f"{exc}", exc.errors) from None
    arguments = list(args_model.model_fields)
    return TaskSpec(name=name, celery_name=celery_name, func=func, args_model=args_model,
                    result_type=hints["return"], retry=retry, queue=queue, summary=summary.strip(),
                    description=description.strip(), result_adapter=TypeAdapter(hints["return"]),
                    schedule=schedule, rate=limits.rate_of(name, arguments, rate_limit, rate_key, burst),
                    concurrency=limits.concurrency_of(name, arguments, concurrency),
                    expires=None if expires is None else limits.expiry_seconds(expires,
                                                                               f"task {name!r}: expires"))


def valid_name(public: str) -> None:
    """Raise ``ValueError`` unless ``public`` can name a task (and is not an endpoint's)."""
    if not _NAME.match(public):
        raise ValueError(f"task name {public!r}: use lowercase letters, digits and _")
    if public in RESERVED_NAMES:
        raise ValueError(f"task name {public!r} is taken by an endpoint (/tasks/{public})")


#: Where taskgate's built-in tasks are declared.
BUILTIN_PACKAGE = "taskgate.tasks"


def register(spec: TaskSpec) -> bool:
    """Add ``spec`` to the allow-list (see ``declare.task``); False when it is one of taskgate's
    built-in tasks whose name a user's task took first (the user's stays: load user modules
    first, as :func:`load` and the workers do). A name declared again must be the same function
    (a module imported twice), not another one."""
    known = _REGISTRY.get(spec.name)
    if known is not None and _origin(known) != _origin(spec):
        if is_builtin(spec):
            return False
        raise ValueError(f"task name {spec.name!r} is already taken by {_origin(known)}"
                         + ("; import your task modules before taskgate.tasks (the built-in tasks)"
                            if is_builtin(known) else ""))
    _REGISTRY[spec.name] = spec
    if known is None:
        _announce(spec)
    return True


#: Called with each task declared from now on (see :func:`subscribe`).
_LISTENERS: list[Callable[[TaskSpec], None]] = []
_LISTENERS_LOCK = threading.Lock()
log = logging.getLogger("taskgate")


def subscribe(listener: Callable[[TaskSpec], None]) -> Callable[[], None]:
    """Call ``listener(spec)`` for each task declared from now on (in the thread that imports
    its module), so an open Taskgate serves a task whose module was imported after it opened;
    returns the function that stops the calls."""
    with _LISTENERS_LOCK:
        _LISTENERS.append(listener)

    def unsubscribe() -> None:
        with _LISTENERS_LOCK:
            if listener in _LISTENERS:
                _LISTENERS.remove(listener)

    return unsubscribe


def _announce(spec: TaskSpec) -> None:
    with _LISTENERS_LOCK:
        listeners = list(_LISTENERS)
    for listener in listeners:
        try:
            listener(spec)
        except Exception:  # a listener's fault must not fail the import that declared the task
            log.exception("taskgate: could not serve the task %r declared late", spec.name)


def is_builtin(spec: TaskSpec) -> bool:
    """True for one of taskgate's built-in tasks (``taskgate.tasks``)."""
    return spec.func.__module__.startswith(BUILTIN_PACKAGE + ".")


def _origin(spec: TaskSpec) -> str:
    return f"{spec.func.__module__}.{spec.func.__qualname__}"


def load(modules: list[str] | tuple[str, ...] = ()) -> dict[str, TaskSpec]:
    """Import ``modules``, then the built-in tasks (a user's task may take a built-in's name);
    return the catalogue.

    The current directory is importable, as it is for ``celery -A``.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in (*modules, BUILTIN_PACKAGE):
        importlib.import_module(module)
    return exposed()


def declared(name: str) -> TaskSpec | None:
    """The task declared as ``name`` now, if any."""
    return _REGISTRY.get(name)


def exposed() -> dict[str, TaskSpec]:
    """Every declared task, by public name (import task modules first)."""
    return dict(_REGISTRY)



"""``@taskgate.task``: declare a task, and submit it with its types kept.

A declared function becomes a Celery task (over ``shared_task``, so any Celery app's worker
runs it) and a :class:`DeclaredTask` the caller keeps: calling it runs the plain function;
``await add.submit(x=1, y=2)`` queues it and returns a :class:`~taskgate.Job` typed with the
function's return type (``Job[int]``); ``add.submit_sync(...)`` does the same from blocking
code. ``add.with_options(countdown=..., ...)`` sets the submission's options. Any other
attribute is the Celery task's (``add.delay``, ``add.s``, ``add.name``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from celery import shared_task

from . import validation
from .limits import Concurrency
from .registry import RESERVED_NAMES, RetryPolicy, TaskSpec, build_spec, register, valid_name
from .schedule import Timing
from .worker.runtime import TaskgateTask

if TYPE_CHECKING:
    from .producer.job import Job, SyncJob

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class SubmitOptions:
    """How one submission is sent (all optional)."""

    #: Run no sooner than this many seconds from now: 0 to 2592000 (30 days).
    countdown: float | None = None
    #: Run no sooner than this time (timezone-aware; up to 30 days ahead, a past one runs at
    #: once). Give ``countdown`` or ``eta``, not both.
    eta: datetime | None = None
    #: 0 (first) to 9 (last), as the API's ``priority``; default 0.
    priority: int | None = None
    #: Seconds after submission (above 0, at most 2592000: 30 days) by which the task must have
    #: started: if it has not, it never runs and ends ``expired``. None: the task's declared
    #: ``expires``, if any.
    expires: float | None = None
    #: The same key (1 to 200 characters) and arguments within 24 h give back the same task
    #: (per owner).
    idempotency_key: str | None = None
    #: The owner the task is submitted for: its quotas apply, and only it (and admins) can see
    #: the task over HTTP. None: taskgate's anonymous owner.
    owner: str | None = None


class Submittable(Generic[P, R]):
    """What can be submitted: a declared task, with options or without."""

    spec: TaskSpec
    options: SubmitOptions

    async def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Validate the arguments against the task's signature (``InvalidArguments`` naming the
        field), record and queue the task, and return its handle once the broker has it.
        ``Unavailable`` within TASKGATE_BACKEND_TIMEOUT when Redis or the broker does not answer
        (the task will not run). Uses the open :class:`~taskgate.Taskgate` (see
        :meth:`Taskgate.current <taskgate.Taskgate.current>`)."""
        from .gate import Taskgate

        return await Taskgate.current().submit(self, *args, **kwargs)

    def submit_sync(self, *args: P.args, **kwargs: P.kwargs) -> SyncJob[R]:
        """:meth:`submit` from blocking code (a script, a Django or Flask view, a sync task),
        with the same deadline; returns a :class:`~taskgate.SyncJob`. Not from a coroutine:
        there, ``await`` :meth:`submit`."""
        from .gate import Taskgate

        return Taskgate.current().submit_sync(self, *args, **kwargs)

    def with_options(self, *, countdown: float | None = None, eta: datetime | None = None,
                     priority: int | None = None, idempotency_key: str | None = None,
                     owner: str | None = None, expires: float | timedelta | None = None) -> Submittable[P, R]:
        """The same task with these submission options (see :class:`SubmitOptions`), checked
        here by the rules the API's query parameters follow (``InvalidArguments`` naming the
        option): ``countdown`` 0 to 2592000 seconds (30 days), ``eta`` a timezone-aware time up
        to 30 days ahead, not both; ``priority`` 0 to 9; ``idempotency_key`` 1 to 200
        characters; ``expires`` seconds (or a ``timedelta``) above 0 and at most 30 days, counted
        from each submission."""
        if isinstance(expires, timedelta):
            expires = expires.total_seconds()
        pairs = (("countdown", countdown), ("eta", eta), ("priority", priority),
                 ("idempotency_key", idempotency_key), ("owner", owner), ("expires", expires))
        given: dict[str, Any] = {name: value for name, value in pairs if value is not None}
        chosen = replace(self.options, **given)
        timing = {name: value for name in ("countdown", "eta", "priority", "expires")
                  if (value := getattr(chosen, name)) is not None}
        validation.options(timing)
        validation.idempotency_key(chosen.idempotency_key)
        return _Configured(self.spec, chosen)


class _Configured(Submittable[P, R]):
    def __init__(self, spec: TaskSpec, options: SubmitOptions) -> None:
        self.spec, self.options = spec, options


class DeclaredTask(Submittable[P, R]):
    """A task declared with ``@taskgate.task``. Calling it runs the function here; ``submit``
    queues it for a worker. Celery's task methods (``delay``, ``apply_async``, ``s``) are
    reachable too, but skip taskgate's validation and records: prefer ``submit``."""

    options = SubmitOptions()

    def __init__(self, spec: TaskSpec, celery_task: Any) -> None:
        self.spec = spec
        #: The Celery task (what a Celery app's registry holds under ``taskgate.<name>``).
        self.celery_task = celery_task
        self.__doc__ = spec.func.__doc__
        self.__name__ = spec.func.__name__
        self.__qualname__ = spec.func.__qualname__
        self.__module__ = spec.func.__module__
        self.__wrapped__ = spec.func

    @property
    def name(self) -> str:
        """The Celery name, ``taskgate.<public name>``."""
        return self.spec.celery_name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        """Run the function in this process (a coroutine for an ``async def`` task)."""
        return self.spec.func(*args, **kwargs)

    def __getattr__(self, attribute: str) -> Any:
        if self.celery_task is None:
            raise AttributeError(f"{attribute!r}: taskgate's built-in task {self.spec.name!r} is replaced by "
                                 "a task of yours with the same name; use yours")
        return getattr(self.celery_task, attribute)

    def __repr__(self) -> str:
        return f"<taskgate task {self.spec.name}>"


@overload
def task(func: Callable[P, Awaitable[R]], /) -> DeclaredTask[P, R]: ...
@overload
def task(func: Callable[P, R], /) -> DeclaredTask[P, R]: ...
@overload
def task(*, name: str | None = None, queue: str | None = None, retry: RetryPolicy | None = None,
         schedule: Timing | None = None, rate_limit: str | None = None, rate_key: str | None = None,
         burst: int | None = None, concurrency: Concurrency | None = None,
         expires: float | timedelta | None = None, **celery_options: Any) -> _Decorator: ...
def task(func: Callable[..., Any] | None = None, /, *, name: str | None = None, queue: str | None = None,
         retry: RetryPolicy | None = None, schedule: Timing | None = None, rate_limit: str | None = None,
         rate_key: str | None = None, burst: int | None = None, concurrency: Concurrency | None = None,
         expires: float | timedelta | None = None, **celery_options: Any) -> Any:
    """Declare an exposed task: ``@taskgate.task`` or ``@taskgate.task(name=..., retry=...)``.

    The function's signature becomes the HTTP request body and its return annotation the
    result type. It is registered with Celery under ``taskgate.<name>`` and runs with
    taskgate's lifecycle (states, progress, retries, cancellation). An ``async def`` task runs
    on its worker process's event loop. ``schedule`` (``taskgate.cron(...)`` or
    ``taskgate.every(...)``) runs it on a schedule, created or updated by each worker that
    starts with it, and removed once a worker starts without the declaration.

    Admission, across the cluster (a run not admitted yet waits ``queued`` in taskgate's
    Redis, not in a worker):

    - ``rate_limit``: ``"<count>/<s|m|h>"`` (``"100/m"``): runs start at most this often,
      evenly spaced; ``burst`` (default 1: strictly spaced) runs may start at once after a
      quiet spell; ``rate_key``: one such budget for the whole task (``"task"``, the default),
      per owner (``"owner"``) or per value of an argument (its name).
    - ``concurrency``: ``taskgate.Concurrency(limit=2, key="owner")``: at most ``limit`` runs
      with the same key at once; keys take turns. ``weights={"acme": 3}`` gives a key value
      ``limit * 3`` runs at once (keys not listed: ``limit``).
    - ``expires``: seconds (or a ``timedelta``, above 0 and at most 30 days) after its
      submission a run that has not started never runs and ends ``expired``.

    Each is checked here: ``TypeError``/``ValueError`` naming the task and the problem (an
    argument named as a key must be one of the function's).
    """
    decorate = _Decorator(name, queue, retry, celery_options, schedule,
                          {"rate_limit": rate_limit, "rate_key": rate_key, "burst": burst,
                           "concurrency": concurrency, "expires": expires})
    return decorate(func) if func is not None else decorate


class _Decorator:
    """``@taskgate.task(...)`` with options: applied to the function next."""

    def __init__(self, name: str | None, queue: str | None, retry: RetryPolicy | None,
                 celery_options: dict[str, Any], schedule: Timing | None = None,
                 limits: dict[str, Any] | None = None) -> None:
        self.name, self.queue, self.retry, self.celery_options = name, queue, retry, celery_options
        self.schedule = schedule
        #: The admission options (``rate_limit``, ``rate_key``, ``burst``, ``concurrency``,
        #: ``expires``), checked by ``build_spec``.
        self.limits = limits or {}

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R]], /) -> DeclaredTask[P, R]: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> DeclaredTask[P, R]: ...
    def __call__(self, fn: Callable[..., Any], /) -> DeclaredTask[Any, Any]:
        public = self.name or fn.__name__
        valid_name(public)
        spec = build_spec(fn, public, f"taskgate.{public}", self.retry or RetryPolicy(), self.queue,
                          self.schedule, **self.limits)
        if not register(spec):  # a built-in whose name a user's task took
            return DeclaredTask(spec, None)
        options = {"queue": self.queue} if self.queue else {}
        celery_task = shared_task(name=spec.celery_name, base=TaskgateTask, ignore_result=True,
                                  max_retries=None, typing=False, taskgate_spec=spec, **options,
                                  **self.celery_options)(fn)
        return DeclaredTask(spec, celery_task)


__all__ = ["RESERVED_NAMES", "DeclaredTask", "SubmitOptions", "Submittable", "task"]

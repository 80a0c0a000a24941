"""``taskgate.Taskgate``: the object a user holds, in their own FastAPI app or anywhere else.

It owns taskgate's clients (the records' Redis, the broker, the Celery app that builds the
messages), opened by ``async with tg:`` or by FastAPI's ``lifespan=tg.lifespan`` and closed
with it; it submits (``await tg.submit(add, x=1, y=2)``, or ``await add.submit(...)`` through
:meth:`Taskgate.current`), hands out :class:`~taskgate.Job` handles, and carries the whole HTTP
API as one ``APIRouter`` (:attr:`Taskgate.router`). ``taskgate api`` is built from it too.

Its clients live on the event loop it was opened on. A call from another loop or thread (a
blocking script, a sync FastAPI endpoint in the thread pool, a worker's task) is run on that
loop and waited for, so one Taskgate serves a whole process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from fastapi import APIRouter, FastAPI, Request

from . import gates, validation
from .auth import Caller
from .config import Settings
from .declare import Submittable
from .exceptions import ConfigurationError, UnknownTask
from .producer import SYSTEM, Options, Producer, bridge, startup
from .producer.job import Job, SyncJob
from .producer.schedules import Schedules
from .registry import TaskSpec, declared, exposed, is_builtin, load, subscribe

if TYPE_CHECKING:
    from celery import Celery

    from .api.keycache import KeyCache

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: ``Taskgate(owner=...)``: the owner of a request to the router, by the user's own auth.
OwnerOf = Callable[[Request], "str | None | Awaitable[str | None]"]

class Taskgate:
    """taskgate inside your application.

    ``Taskgate()`` reads the TASKGATE_* environment (README's settings) when it opens, not when
    it is made: making one does no I/O and raises nothing for a missing setting (opening does,
    naming it), so a module holding one imports without settings. Keyword arguments override
    single settings (``Taskgate(redis_url="redis://...", result_ttl=3600)``), or pass a whole
    ``settings=Settings(...)``. ``celery_app``: your own Celery app, whose broker and
    configuration taskgate then uses (see README, "Bring your own Celery app").

    ``builtins``: which of taskgate's built-in tasks (add, send_email, count_primes,
    process_file...) :attr:`router` and :attr:`schedules` serve besides your own: none by
    default, ``True`` for all, or their names (``builtins=["add"]``). ``POST /files`` is served
    with ``process_file`` only. Your own tasks are all served, whichever module declares them and
    whenever it is imported. ``tg.submit(task)`` in Python takes any declared task.

    ``owner``: a function of the request naming the caller's owner, by your own auth (it
    replaces API keys; see :attr:`owner`).

    ``auth``: whether :attr:`router` requires API keys. Default from TASKGATE_AUTH: ``on`` and
    ``auto`` require them (this object cannot know where your app is served; ``taskgate up
    --app`` resolves ``auto`` for its bind address), ``off`` does not. Set ``auth=False`` when
    your own dependency guards the router (``include_router(tg.router, dependencies=[...])``).
    """

    def __init__(self, settings: Settings | None = None, *, celery_app: Celery | None = None,
                 auth: bool | None = None, owner: OwnerOf | None = None, log_submits: bool = False,
                 builtins: bool | Iterable[str] = False, **overrides: Any) -> None:
        if settings is not None and overrides:
            raise TypeError("pass settings=... or single settings as keywords, not both")
        self._given, self._overrides = settings, overrides
        #: The settings it opened with (resolved again at each open; see :attr:`settings`).
        self._settings: Settings | None = None
        self.celery_app = celery_app
        if celery_app is not None:  # a worker importing this module runs that app, adopted then
            from .worker.celery_app import claim

            claim(self._resolve)
        #: Who calls :attr:`router`, by your own auth: ``owner(request)`` (sync or async) names the
        #: owner, whose tasks alone the caller then sees and whose quotas apply; None or "" is a 401.
        #: Given, it replaces API keys.
        self.owner = owner
        self._auth = auth
        #: The built-in tasks served besides the user's (see the class's docstring): True for all.
        self.builtins: bool | frozenset[str] = (builtins if isinstance(builtins, bool)
                                                 else frozenset([builtins] if isinstance(builtins, str)
                                                                else builtins))
        #: Log an ``accepted`` line (with the task id) per task submitted over :attr:`router`.
        self.log_submits = log_submits
        self._producer: Producer | None = None
        self._keys: KeyCache | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._router: APIRouter | None = None
        self._loaded: tuple[str, ...] | None = None
        self._lag: asyncio.Task[None] | None = None
        self._publication: startup.Publication | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._unsubscribe: Callable[[], None] | None = None
        self._opened_pid = 0
        #: While the process-wide Taskgate opens on its thread (see :meth:`current`).
        self._opening: concurrent.futures.Future[None] | None = None
        #: The thread whose loop runs a Taskgate opened by ``with tg:`` (see :meth:`__enter__`).
        self._thread: threading.Thread | None = None

    # -- settings and what is served ------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings: those it opened with while open; before, the TASKGATE_* environment as
        it is now (read again at open, so settings a test sets after import apply)."""
        return self._settings if self._settings is not None else self._resolve()

    def _resolve(self) -> Settings:
        settings = self._given or (Settings(**self._overrides) if self._overrides else gates.environment())
        if self.celery_app is not None:
            from .worker.celery_app import adopt

            settings = adopt(self.celery_app, settings)
        return settings

    @property
    def auth(self) -> bool:
        """Whether :attr:`router` asks for API keys (see the class's docstring)."""
        return self.owner is None and (self._auth if self._auth is not None else self.settings.auth != "off")

    def serves(self, spec: TaskSpec) -> bool:
        """Whether :attr:`router` and :attr:`schedules` serve ``spec``: every task of yours, and
        the built-in ones :attr:`builtins` names."""
        if not is_builtin(spec):
            return True
        return self.builtins if isinstance(self.builtins, bool) else spec.name in self.builtins

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._producer is not None

    @property
    def producer(self) -> Producer:
        """The clients (see :class:`~taskgate.producer.Producer`); only while open."""
        if self._producer is None:
            raise ConfigurationError("this Taskgate is not open: pass `lifespan=tg.lifespan` to FastAPI(), "
                                     "or use `async with tg:`")
        return self._producer

    @property
    def api_keys(self) -> KeyCache:
        """The API keys :attr:`router` verified lately (see :mod:`taskgate.api.keycache`); only
        while open."""
        if self._keys is None:
            raise ConfigurationError("this Taskgate is not open: pass `lifespan=tg.lifespan` to FastAPI(), "
                                     "or use `async with tg:`")
        return self._keys

    @property
    def schedules(self) -> Schedules:
        """Schedules (``await tg.schedules.create("add", {"x": 1, "y": 2}, every=30)``, ``list``,
        ``get``, ``update``, ``pause``, ``resume``, ``run_now``, ``delete``); only while open."""
        return self.producer.schedules

    @property
    def catalogue(self) -> dict[str, TaskSpec]:
        """The tasks served (see :meth:`serves`) as declared now: the built-in ones,
        TASKGATE_TASK_MODULES (imported on first use), and those of any module imported since."""
        self._load(self.settings)
        return {name: spec for name, spec in exposed().items() if self.serves(spec)}

    def _load(self, settings: Settings) -> None:
        if self._loaded != tuple(settings.task_modules):
            load(settings.task_modules)
            self._loaded = tuple(settings.task_modules)

    async def open(self) -> None:
        """Open the clients on the running event loop, with the TASKGATE_* environment as it is
        now (``ConfigurationError`` naming a missing setting). It makes no connection and waits
        for none: checking the records' key layout and telling workers which module declares
        each task (again every minute while open, withdrawn at close) run in the background, so
        a stalled Redis delays no startup. Redis being down does not stop it opening: calls raise
        ``Unavailable`` within the deadline meanwhile."""
        from .producer.metrics import watch_loop_lag

        if self._producer is not None:
            raise RuntimeError("this Taskgate is open already")
        settings = self._resolve()
        settings.require_redis_url()
        self._load(settings)  # import the task modules before the producer reads the catalogue
        self._settings = settings
        self._producer = Producer.from_settings(settings, self.celery_app, self.serves)
        from .api.keycache import KeyCache

        self._keys = KeyCache.of(self._producer.backend)
        self._loop, self._opened_pid = asyncio.get_running_loop(), os.getpid()
        gates.opened.append(self)
        self._unsubscribe = subscribe(self._declared)
        self._publication = startup.Publication(self._producer)
        self._in_background(startup.set_up(self._publication))
        self._in_background(self._publication.refresh())  # cancelled at close
        self._lag = asyncio.create_task(watch_loop_lag())

    def _in_background(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _declared(self, spec: TaskSpec) -> None:
        """A task declared after this Taskgate opened (its module imported late): serve it, and
        tell the workers where it is declared (see :func:`.registry.subscribe`)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if bridge.running_loop() is loop:
            self._serve(spec)
        else:
            loop.call_soon_threadsafe(self._serve, spec)

    def _serve(self, spec: TaskSpec) -> None:
        producer, publication = self._producer, self._publication
        if producer is not None and publication is not None and producer.declare(spec):
            self._in_background(publication.publish())

    async def close(self) -> None:
        """Close every client (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._lag is not None:
            self._lag.cancel()
            self._lag = None
        background = list(self._background)
        for task in background:
            task.cancel()
        # let the cancellations finish here: a loop closed just after would otherwise destroy
        # a startup step still pending (its socket unclosed)
        running = asyncio.get_running_loop()
        await asyncio.gather(*(task for task in background if task.get_loop() is running),
                             return_exceptions=True)
        with contextlib.suppress(ValueError):
            gates.opened.remove(self)
        api_keys, self._keys = self._keys, None
        if api_keys is not None:
            await api_keys.close()
        producer, self._producer, self._loop = self._producer, None, None
        publication, self._publication = self._publication, None
        self._settings = None
        if publication is not None:
            await publication.withdraw()  # doctor stops counting tasks only this one sent
        if producer is not None:
            await producer.close()

    async def __aenter__(self) -> Taskgate:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def __enter__(self) -> Taskgate:
        """``with tg:`` in blocking code: open it on an event loop of its own, on a daemon thread
        (as the process-wide one is), until the block ends. Its calls, ``task.submit_sync()`` and
        the jobs' blocking methods, then go through it."""
        if self._producer is not None or self._thread is not None:
            raise RuntimeError("this Taskgate is open already")
        self._open_on_thread(wait=True)
        return self

    def _open_on_thread(self, *, wait: bool) -> None:
        """Open on a new event loop run by a daemon thread of its own: waited for here when
        ``wait``, else by the first call (see :meth:`call`)."""
        loop, self._thread = gates.loop_thread()
        opening = asyncio.run_coroutine_threadsafe(self.open(), loop)
        if not wait:
            self._opening, self._loop = opening, loop
            return
        try:
            opening.result()
        except BaseException:
            gates.stop_loop(loop, self._thread)
            self._thread = None
            raise

    def __exit__(self, *_: object) -> None:
        loop, thread = self._loop, self._thread
        self._thread = None
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self.close(), loop).result()
            gates.stop_loop(loop, thread)

    @asynccontextmanager
    async def lifespan(self, app: FastAPI | None = None) -> AsyncIterator[None]:
        """Open for the life of ``app``: ``FastAPI(lifespan=tg.lifespan)``, or inside your own
        lifespan, ``async with tg.lifespan(app): yield``. The app's :attr:`router` routes find
        this Taskgate through ``app.state.taskgate``. With a meter provider set up (OpenTelemetry),
        the cluster's metrics of ``GET /metrics`` are also its instruments meanwhile
        (``producer.otel_metrics``)."""
        from .producer import otel_metrics

        await self.open()
        if app is not None:
            app.state.taskgate = self
        instruments = otel_metrics.observe(self.producer, asyncio.get_running_loop())
        try:
            yield
        finally:
            if instruments is not None:
                otel_metrics.forget(instruments)
            await self.close()

    @classmethod
    def current(cls) -> Taskgate:
        """The Taskgate ``task.submit()`` uses: the latest one opened in this process and still
        open; without one, a process-wide one made from the TASKGATE_* environment (the worker's
        settings inside a worker) and opened on a thread of its own, on first use."""
        pid = os.getpid()
        for gate in reversed(gates.opened):
            if gate._loop is not None and not gate._loop.is_closed() and gate._opened_pid == pid:
                return gate
        return gates.default()

    # -- the HTTP API ---------------------------------------------------------------------------

    @property
    def router(self) -> APIRouter:
        """Every taskgate endpoint (submit, status, wait, SSE, cancel, history, batch, dead letters,
        files, metrics, health) as one router: ``app.include_router(tg.router, prefix="/jobs")``.
        It maps taskgate's errors to its JSON envelope itself (503 with Retry-After, 404, 422...)."""
        if self._router is None:
            from .api.router import build_router

            self._router = build_router(self)
        return self._router

    def install_error_handlers(self, app: FastAPI, *, validation: bool = False) -> None:
        """Answer taskgate's errors raised in ``app``'s own routes as the router does, each in
        the ``{"error": {...}}`` envelope: ``Unavailable`` -> 503 with Retry-After,
        ``TaskNotFound`` -> 404, ``InvalidArguments`` -> 422, ``QuotaExceeded`` -> 429...; and
        what ``await job.result()`` raises: ``TaskFailed`` -> 502 ``task_failed`` with the task's
        own error in ``task_error``, ``TaskCancelled`` -> 409 ``task_cancelled``, ``TaskExpired``
        -> 409 ``task_expired`` (why in ``task_error``), its ``TimeoutError`` -> 504
        ``task_timeout`` with the ``task_id`` to ask for later.
        FastAPI's own 422 body for a request that fails validation is left as it is, unless
        ``validation=True``."""
        from .api import errors

        errors.install(app, validation=validation)

    # -- submitting -----------------------------------------------------------------------------

    async def submit(self, task: Submittable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Submit ``task`` (a declared task, or one ``.with_options(...)``): see
        :meth:`~taskgate.DeclaredTask.submit`."""
        spec, arguments, options, caller, idempotency = self._prepare(task, args, kwargs)
        submission = await self.call(lambda producer: producer.submitter.submit(
            spec, arguments, options, idempotency, caller))
        return Job(self, submission.task_id, spec, caller)

    def submit_sync(self, task: Submittable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> SyncJob[R]:
        """:meth:`submit` from blocking code."""
        job: Job[R] = self.call_sync(lambda _: self.submit(task, *args, **kwargs))
        return job.sync

    def _prepare(self, task: Submittable[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
                 ) -> tuple[TaskSpec, Any, Options, Caller, str | None]:
        """The task's spec, its arguments checked by the one validator (``InvalidArguments``
        naming each field, as the API's 422 does), and the options ``with_options`` checked."""
        spec = task.spec
        if declared(spec.name) is not spec:  # a built-in whose name a task of yours took
            raise UnknownTask(spec.name)
        arguments = validation.call(spec.args_model, args, kwargs)
        chosen = task.options
        caller = SYSTEM if chosen.owner is None else Caller(owner=chosen.owner)
        options = Options(countdown=chosen.countdown, eta=chosen.eta, priority=chosen.priority,
                          expires_at=None if chosen.expires is None else time.time() + chosen.expires)
        return spec, arguments, options, caller, chosen.idempotency_key

    @overload
    async def job(self, task_id: str, task: None = None, owner: str | None = None) -> Job[Any]: ...
    @overload
    async def job(self, task_id: str, task: Submittable[Any, R], owner: str | None = None) -> Job[R]: ...
    async def job(self, task_id: str, task: Submittable[Any, Any] | None = None,
                  owner: str | None = None) -> Job[Any]:
        """A handle on an existing task (``TaskNotFound`` when there is none, or when ``owner``
        is given and the task is another owner's). ``task``: the declared task, for a result
        typed under mypy (``Job[int]``); without it a ``Job[Any]``, whose result is still the
        declared type at run time (a model again), read from the task the record names."""
        caller = SYSTEM if owner is None else Caller(owner=owner)
        record = await self.call(lambda producer: producer.reader.get(task_id, caller))
        spec = task.spec if task is not None else declared(record.name or "")
        return Job(self, task_id, spec, caller)

    # -- running on this Taskgate's loop, from anywhere (see ``producer.bridge``) ---------------

    def _opened_loop(self) -> tuple[Producer, asyncio.AbstractEventLoop]:
        producer, loop = self.producer, self._loop
        assert loop is not None
        return producer, loop

    async def call(self, work: Callable[[Producer], Awaitable[T]]) -> T:
        """``await work(producer)`` on this Taskgate's event loop (from this loop or another)."""
        if self._opening is not None:  # the process-wide one, opening on its own thread
            await asyncio.wrap_future(self._opening)
            self._opening = None
        producer, loop = self._opened_loop()
        return await bridge.run(work(producer), loop)

    def call_sync(self, work: Callable[[Producer], Awaitable[T]]) -> T:
        """``work(producer)`` run on this Taskgate's event loop, waited for in this thread."""
        if self._opening is not None and bridge.running_loop() is None:
            self._opening.result()
            self._opening = None
        producer, loop = self._opened_loop()
        return bridge.run_sync(work(producer), loop, "`await task.submit(...)` and the Job's methods instead")

    def stream(self, events: Callable[[Producer], AsyncIterator[T]]) -> AsyncIterator[T]:
        """Iterate ``events(producer)`` (run on this Taskgate's loop) from the calling loop."""
        producer, loop = self._opened_loop()
        return bridge.iterate(events(producer), loop)

    def stream_sync(self, events: Callable[[Producer], AsyncIterator[T]]) -> Iterator[T]:
        """Iterate ``events(producer)`` (run on this Taskgate's loop) from blocking code."""
        producer, loop = self._opened_loop()
        return bridge.iterate_sync(events(producer), loop, "`async for event in job.events()` instead")

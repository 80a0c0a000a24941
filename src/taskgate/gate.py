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
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Request

from .auth import Caller
from .config import Settings, get_settings
from .declare import Submittable
from .exceptions import ConfigurationError, InvalidArguments, TaskGateError, UnknownTask
from .producer import SYSTEM, Options, Producer, bridge
from .producer.job import Job, SyncJob
from .producer.schedules import Schedules
from .records import keys
from .records.upgrade import upgrade_at
from .records.workers import catalogue_entries
from .registry import TaskSpec, declared, load

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("taskgate")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

#: ``Taskgate(owner=...)``: the owner of a request to the router, by the user's own auth.
OwnerOf = Callable[[Request], "str | None | Awaitable[str | None]"]

#: Open Taskgates of this process, the latest last (see :meth:`Taskgate.current`).
_open: list[Taskgate] = []
_default_lock = threading.Lock()
_default: tuple[int, Taskgate] | None = None


class Taskgate:
    """taskgate inside your application.

    ``Taskgate()`` reads the TASKGATE_* environment (README's settings); keyword arguments
    override single settings (``Taskgate(redis_url="redis://...", result_ttl=3600)``), or pass a
    whole ``settings=Settings(...)``. ``celery_app``: your own Celery app, whose broker and
    configuration taskgate then uses (see README, "Bring your own Celery app").

    ``owner``: a function of the request naming the caller's owner, by your own auth (it
    replaces API keys; see :attr:`owner`).

    ``auth``: whether :attr:`router` requires API keys. Default from TASKGATE_AUTH: ``on`` and
    ``auto`` require them (this object cannot know where your app is served; ``taskgate up
    --app`` resolves ``auto`` for its bind address), ``off`` does not. Set ``auth=False`` when
    your own dependency guards the router (``include_router(tg.router, dependencies=[...])``).
    """

    def __init__(self, settings: Settings | None = None, *, celery_app: Celery | None = None,
                 auth: bool | None = None, owner: OwnerOf | None = None, log_submits: bool = False,
                 **overrides: Any) -> None:
        if settings is not None and overrides:
            raise TypeError("pass settings=... or single settings as keywords, not both")
        self.settings = settings or (Settings(**overrides) if overrides else _environment())
        if celery_app is not None:
            from .worker.celery_app import adopt

            self.settings = adopt(celery_app, self.settings)
        self.settings.require_redis_url()  # fail at once, with the fix, rather than on first use
        self.celery_app = celery_app
        #: Who calls :attr:`router`, by your own auth: ``owner(request)`` (sync or async) names the
        #: owner, whose tasks alone the caller then sees and whose quotas apply; None or "" is a 401.
        #: Given, it replaces API keys.
        self.owner = owner
        #: Whether :attr:`router` asks for API keys.
        self.auth = owner is None and (auth if auth is not None else self.settings.auth != "off")
        #: Log an ``accepted`` line (with the task id) per task submitted over :attr:`router`.
        self.log_submits = log_submits
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._router: APIRouter | None = None
        self._catalogue: dict[str, TaskSpec] | None = None
        self._lag: asyncio.Task[None] | None = None
        self._opened_pid = 0
        #: While the process-wide Taskgate opens on its thread (see :meth:`current`).
        self._opening: concurrent.futures.Future[None] | None = None

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
    def schedules(self) -> Schedules:
        """Schedules (``await tg.schedules.create("add", {"x": 1, "y": 2}, every=30)``, ``list``,
        ``get``, ``update``, ``pause``, ``resume``, ``run_now``, ``delete``); only while open."""
        return self.producer.schedules

    @property
    def catalogue(self) -> dict[str, TaskSpec]:
        """The declared tasks (the built-in ones, TASKGATE_TASK_MODULES, and any imported)."""
        if self._catalogue is None:
            self._catalogue = load(self.settings.task_modules)
        return self._catalogue

    async def open(self) -> None:
        """Open the clients on the running event loop (no connection is made until first
        use); check the records' key layout and tell workers which module declares each task.
        Redis being down does not stop it opening: calls raise ``Unavailable`` meanwhile."""
        from .producer.metrics import watch_loop_lag

        if self._producer is not None:
            raise RuntimeError("this Taskgate is open already")
        self.catalogue  # noqa: B018 - import the task modules before the producer snapshots them
        await upgrade_records(self.settings)
        self._producer = Producer.from_settings(self.settings, self.celery_app)
        self._loop, self._opened_pid = asyncio.get_running_loop(), os.getpid()
        _open.append(self)
        await publish_catalogue(self._producer)
        self._lag = asyncio.create_task(watch_loop_lag())

    async def close(self) -> None:
        """Close every client (idempotent)."""
        if self._lag is not None:
            self._lag.cancel()
            self._lag = None
        with contextlib.suppress(ValueError):
            _open.remove(self)
        producer, self._producer, self._loop = self._producer, None, None
        if producer is not None:
            await producer.close()

    async def __aenter__(self) -> Taskgate:
        await self.open()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @asynccontextmanager
    async def lifespan(self, app: FastAPI | None = None) -> AsyncIterator[None]:
        """Open for the life of ``app``: ``FastAPI(lifespan=tg.lifespan)``, or inside your own
        lifespan, ``async with tg.lifespan(app): yield``. The app's :attr:`router` routes find
        this Taskgate through ``app.state.taskgate``."""
        await self.open()
        if app is not None:
            app.state.taskgate = self
        try:
            yield
        finally:
            await self.close()

    @classmethod
    def current(cls) -> Taskgate:
        """The Taskgate ``task.submit()`` uses: the latest one opened in this process and still
        open; without one, a process-wide one made from the TASKGATE_* environment (the worker's
        settings inside a worker) and opened on a thread of its own, on first use."""
        pid = os.getpid()
        for gate in reversed(_open):
            if gate._loop is not None and not gate._loop.is_closed() and gate._opened_pid == pid:
                return gate
        return _default_gate()

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

    def install_error_handlers(self, app: FastAPI) -> None:
        """Answer taskgate's errors raised in ``app``'s own routes as the router does:
        ``Unavailable`` -> 503 with Retry-After, ``TaskNotFound`` -> 404, ``InvalidArguments``
        -> 422, ``QuotaExceeded`` -> 429..., each in the ``{"error": {...}}`` envelope (and
        request validation errors too)."""
        from .api import errors

        errors.install(app)

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
        from pydantic import ValidationError

        from .api.errors import validation_message

        spec = task.spec
        if declared(spec.name) is not spec:  # a built-in whose name a task of yours took
            raise UnknownTask(spec.name)
        fields = list(spec.args_model.model_fields)
        if len(args) > len(fields):
            raise InvalidArguments(f"{spec.name} takes {len(fields)} arguments, {len(args)} were given")
        given = dict(zip(fields, args, strict=False))
        for name in kwargs:
            if name in given:
                raise InvalidArguments(f"{spec.name}: argument {name!r} given twice")
        try:
            arguments = spec.args_model.model_validate(given | kwargs)
        except ValidationError as exc:
            found = [{**error, "loc": ("argument", *error["loc"])} for error in exc.errors(include_url=False)]
            raise InvalidArguments(f"{spec.name}: {validation_message(found)}") from None
        chosen = task.options
        caller = SYSTEM if chosen.owner is None else Caller(owner=chosen.owner)
        options = Options(countdown=chosen.countdown, eta=chosen.eta, priority=chosen.priority)
        return spec, arguments, options, caller, chosen.idempotency_key

    async def job(self, task_id: str, task: Submittable[Any, R] | None = None,
                  owner: str | None = None) -> Job[R]:
        """A handle on an existing task (``TaskNotFound`` when there is none, or when ``owner``
        is given and the task is another owner's). ``task``: the declared task, for a typed
        result; by default the one the record names."""
        caller = SYSTEM if owner is None else Caller(owner=owner)
        record = await self.call(lambda producer: producer.reader.get(task_id, caller))
        spec = task.spec if task is not None else self.catalogue.get(record.name or "")
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


async def publish_catalogue(producer: Producer) -> None:
    """Tell workers which module declares each task (they name it when they lack one).
    Best effort: an API starting while Redis is down still starts, and serves 503s meanwhile."""
    entries = catalogue_entries(producer.catalogue.values(), producer.settings.default_queue)
    modules: dict[Any, Any] = {name: orjson.dumps(entry) for name, entry in entries.items()}
    try:
        async with producer.backend.deadline():
            await producer.backend.redis.hset(keys.CATALOGUE, mapping=modules)
    except TaskGateError as exc:
        log.warning("could not publish the task catalogue (%s); workers lacking a task will not "
                    "name its module", exc)


async def upgrade_records(settings: Settings) -> None:
    """Move records an earlier version wrote to this key layout (once per Redis; see
    ``records.upgrade``). Best effort, like :func:`publish_catalogue`."""
    from redis.exceptions import RedisError

    try:
        await asyncio.to_thread(upgrade_at, settings.require_redis_url(), settings.backend_timeout)
    except RedisError as exc:
        log.warning("could not check the records' key layout (%s)", exc)



def _environment() -> Settings:
    """TASKGATE_* settings; without a Redis URL, those of the ``taskgate up`` running on this
    data dir (its embedded Valkey), as the CLI commands find it."""
    settings = get_settings()
    if settings.redis_url is None and settings.result_backend is None:
        from .service import instance

        if instance.join(settings) is not None:
            settings = get_settings()
    return settings


def _default_gate() -> Taskgate:
    """The process-wide Taskgate (see :meth:`Taskgate.current`), opened on a daemon thread's
    event loop on first use (again in a forked child)."""
    global _default
    with _default_lock:
        if _default is not None and _default[0] == os.getpid():
            return _default[1]
        from .worker.running import worker_settings

        gate = Taskgate(worker_settings() or _environment())
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="taskgate-client", daemon=True).start()
        # Opened there, waited for by the first call (awaited from a coroutine: no loop blocks).
        gate._opening = asyncio.run_coroutine_threadsafe(gate.open(), loop)
        gate._loop = loop
        _default = (os.getpid(), gate)
        log.debug("taskgate: opened a process-wide Taskgate for task.submit()")
        return gate

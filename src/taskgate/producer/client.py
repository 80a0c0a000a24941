"""The producer as one object: what the API (and, soon, a user's own app) holds to submit,
read, wait for and control tasks. It only assembles the parts (:class:`.Submitter`,
:class:`.Reader`, :class:`.Control`) over one :class:`.Backend` and one broker, and owns
their connections' lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from celery import Celery

from .. import brokers, connections
from ..config import Settings
from ..exceptions import BackendUnavailable, UnknownTask
from ..records.scripts import AsyncScripts
from ..registry import TaskSpec, exposed
from ..worker.celery_app import create_celery_app
from . import overview, queues
from .backend import Backend
from .bulk import Bulk
from .control import Control
from .feed import Feed
from .limits import AdmissionLimits
from .reads import Reader
from .schedules import Schedules
from .submit import Submitter
from .subscriptions import Limits, Subscriptions
from .webhook_deliveries import WebhookDeliveries
from .webhooks import Webhooks
from .workflows import Workflows


class Producer:
    """Submitting (:attr:`submitter`), reading and waiting (:attr:`reader`), control
    (:attr:`control`), admission limits (:attr:`limits`) over the records' Redis and the broker."""

    def __init__(self, settings: Settings, app: Celery, backend: Backend, broker: brokers.Broker,
                 subscriptions: Subscriptions, serves: Callable[[TaskSpec], bool] = lambda _: True) -> None:
        self.settings, self.app, self.backend, self.broker = settings, app, backend, broker
        #: Whether a declared task is one this producer serves by name (over HTTP, schedules).
        self.serves = serves
        #: The declared tasks this producer serves by name: those declared now, and those
        #: :meth:`declare` adds as their modules are imported later.
        self.catalogue: dict[str, TaskSpec] = {name: spec for name, spec in exposed().items() if serves(spec)}
        self.subscriptions = subscriptions
        self.submitter = Submitter(backend, broker, app, self.catalogue)
        self.reader = Reader(backend, subscriptions)
        self.control = Control(backend, self.reader, broker, app, self.catalogue, self.submitter)
        self.schedules = Schedules(self.submitter, self.reader, self.catalogue)
        self.bulk = Bulk(self.control, self.reader)
        #: Workflows: graphs of runs, submitted in one script, their edges taken in Lua.
        self.workflows = Workflows(backend, self.submitter.dispatcher, self.catalogue, subscriptions)
        #: Admission limits: read every limited task's, override or restore one's.
        self.limits = AdmissionLimits(backend, self.catalogue)
        #: Webhook subscriptions (their deliveries are written by the scripts that end runs).
        self.webhooks = Webhooks(backend)
        #: Their deliveries: listed, a test event, a retry.
        self.webhook_deliveries = WebhookDeliveries(self.webhooks)
        #: Live task changes for ``GET /events`` (a subscription opened by the first feed).
        per_owner = settings.max_streams_per_owner or max(1, settings.max_streams // 4)
        self.feed = Feed(connections.feed(settings.require_redis_url(), settings.backend_timeout),
                         settings.max_streams, per_owner)

    @classmethod
    def from_settings(cls, settings: Settings, app: Celery | None = None,
                      serves: Callable[[TaskSpec], bool] = lambda _: True) -> Producer:
        """Build the producer and its clients (no connection is opened until first use);
        ``app``: a Celery app of the user's (see ``worker.celery_app.adopt``), else taskgate's;
        ``serves``: which declared tasks it serves by name (all by default)."""
        app = app or create_celery_app(settings)
        app.loader.import_default_modules()
        redis = connections.fail_fast(settings.require_redis_url(), settings.backend_timeout,
                                      settings.redis_max_connections)
        backend = Backend(settings, redis, AsyncScripts(redis))
        # Waits on tasks' events share one connection of their own (see ``subscriptions``).
        timeout = settings.backend_timeout
        subscriptions = Subscriptions(
            connections.events(settings.require_redis_url(), timeout), timeout,
            Limits(settings.max_streams, settings.max_streams_per_owner or max(1, settings.max_streams // 4)))
        return cls(settings, app, backend, brokers.select(settings, app, redis), subscriptions, serves)

    def declare(self, spec: TaskSpec) -> bool:
        """Serve ``spec``, declared after this producer was built, if :attr:`serves` says so
        (call it on the producer's event loop); True when the catalogue changed."""
        if not self.serves(spec) or self.catalogue.get(spec.name) is spec:
            return False
        self.catalogue[spec.name] = spec
        return True

    async def close(self) -> None:
        """Close every client this producer opened."""
        await self.broker.close()
        await self.feed.close()
        await self.subscriptions.close()
        await self.backend.redis.aclose()

    def spec(self, name: str) -> TaskSpec:
        """The declared task ``name``, or ``UnknownTask``."""
        spec = self.catalogue.get(name)
        if spec is None:
            raise UnknownTask(name)
        return spec

    async def queues(self) -> list[dict[str, Any]]:
        """Every known queue with its depth and live workers (see :func:`.queues.queues`)."""
        return await queues.queues(self.backend, self.broker, self.catalogue)

    async def summary(self) -> overview.Summary:
        """What waits, runs and ended lately (see :func:`.overview.summary`)."""
        return await overview.summary(self.backend, self.broker, self.catalogue)

    async def workers(self) -> list[overview.WorkerView]:
        """The live workers (see :func:`.overview.workers`)."""
        return await overview.workers(self.backend)

    async def check(self) -> dict[str, str]:
        """Ping the broker and Redis; map each to "ok" or the problem seen."""
        checks: dict[str, str] = {}

        async def probe(component: str, ping: Callable[[], Awaitable[Any]]) -> None:
            try:
                async with self.backend.deadline(component):
                    await ping()
                checks[component] = "ok"
            except BackendUnavailable as exc:
                checks[component] = exc.detail

        await asyncio.gather(probe("broker", self.broker.ping), probe("backend", self.backend.redis.ping))
        return checks

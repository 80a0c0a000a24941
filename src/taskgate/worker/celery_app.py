"""The one place that creates and configures the Celery application.

The API and the workers both call :func:`create_celery_app` with the same
settings, so producer and consumer always agree on serializers and queues.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery
from celery.app.defaults import DEFAULTS

from ..config import Settings, get_settings

#: Modules that hold taskgate's built-in tasks.
BUILTIN_TASK_MODULES = ("taskgate.tasks",)


def create_celery_app(settings: Settings) -> Celery:
    """Build a Celery app from settings: JSON only, started state tracked, results expiring."""
    app = Celery("taskgate", set_as_current=False)
    timeout = settings.backend_timeout
    if settings.broker_is_redis and settings.effective_broker_url.startswith(("redis://", "rediss://")):
        # Same protocol and keys as kombu's; mends a reconnect crash (see transport.py).
        app.conf.broker_transport = "taskgate.worker.transport:Transport"
    app.conf.update(
        broker_url=settings.effective_broker_url,
        result_backend=settings.effective_result_backend,
        # JSON only, end to end: pickle is never produced nor accepted.
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_default_queue=settings.default_queue,
        task_track_started=True,
        # Loses nothing: ack after the task ran, requeue if its process died, hold one at a time.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=settings.worker_prefetch,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        result_expires=settings.result_ttl,
        # Task events are a publish per task state from the worker's main process (costly on short tasks):
        # off unless asked for (`taskgate worker --task-events`) or switched on by a running
        # Flower (it broadcasts enable_events every few seconds).
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=timeout,
        redis_socket_connect_timeout=timeout,
        # Workers block on BRPOP for up to this long, so it must exceed the poll interval;
        # it still bounds a stalled result-backend call.
        redis_socket_timeout=max(timeout, 5.0),
        worker_hijack_root_logger=False,
        # Reports refused (non-JSON) messages in the task's record.
        worker_consumer="taskgate.worker.consumer:Consumer",
        # The user's modules first: a task of theirs may take a built-in's name.
        include=[*settings.task_modules, *BUILTIN_TASK_MODULES],
    )
    app.taskgate_settings = settings  # read back by settings_of (not in app.conf: it is not config)
    return app


def settings_for(app: Celery, settings: Settings) -> Settings:
    """The settings taskgate runs with beside a user's Celery app: where TASKGATE_REDIS_URL and
    TASKGATE_BROKER_URL are unset, the app's broker is taskgate's (its records go to that Redis,
    or to the app's Redis result backend when the broker is not Redis). Changes nothing."""
    conf = app.conf
    update: dict[str, object] = {}
    broker = str(conf.broker_url or "")
    if settings.redis_url is None and settings.broker_url is None and broker:
        backend = str(conf.result_backend or "")
        if broker.startswith(("redis://", "rediss://", "unix://")):
            update["redis_url"] = broker
        else:
            update["broker_url"] = broker
            if backend.startswith(("redis://", "rediss://")):
                update["redis_url"] = backend
    return settings.model_copy(update=update) if update else settings


def adopt(app: Celery, settings: Settings) -> Settings:
    """Make a user's own Celery app carry taskgate's tasks next to its own (before its worker
    starts), and return the settings taskgate then runs with (:func:`settings_for`).

    Where TASKGATE_REDIS_URL / TASKGATE_BROKER_URL are set, they become the app's broker and
    result backend too. The app's workers get what taskgate's tasks need and nothing that
    changes its own tasks: taskgate's built-in tasks and task modules are included, the consumer
    that records refused messages, the Redis transport fix, a visibility timeout when none is
    set, and TASKGATE_WORKER_PREFETCH messages held per process unless the app set another value
    than Celery's default. Acking late and requeueing on a lost worker are set on taskgate's task class, not
    on the app.
    """
    conf = app.conf
    adopted_settings = settings_for(app, settings)
    if adopted_settings is settings:  # TASKGATE_* name the servers (as `taskgate up` does)
        conf.broker_url = settings.effective_broker_url
        conf.result_backend = settings.effective_result_backend
    settings = adopted_settings
    if settings.broker_is_redis and settings.effective_broker_url.startswith(("redis://", "rediss://")) \
            and not conf.broker_transport:
        conf.broker_transport = "taskgate.worker.transport:Transport"
    options = dict(conf.broker_transport_options or {})
    options.setdefault("visibility_timeout", settings.visibility_timeout)
    conf.broker_transport_options = options
    if conf.worker_prefetch_multiplier == DEFAULTS["worker_prefetch_multiplier"]:
        conf.worker_prefetch_multiplier = settings.worker_prefetch
    conf.worker_consumer = "taskgate.worker.consumer:Consumer"
    conf.include = [*dict.fromkeys([*(conf.include or ()), *settings.task_modules, *BUILTIN_TASK_MODULES])]
    app.taskgate_settings = settings
    global _adopted
    _adopted = app
    return settings


_adopted: Celery | None = None
#: How the latest Taskgate made with a user's Celery app resolves its settings (adopting it).
_claimed: Callable[[], Settings] | None = None


def claim(resolve: Callable[[], Settings]) -> None:
    """Called by a :class:`~taskgate.Taskgate` made with a user's Celery app: ``resolve()``
    adopts that app with its settings. Nothing is read now (a Taskgate reads its settings when
    it opens); a worker importing the module that made it adopts the app as it starts
    (:func:`adopted`)."""
    global _claimed
    _claimed = resolve


def adopted() -> Celery | None:
    """The user's Celery app a :class:`~taskgate.Taskgate` of this process was given, if any,
    adopted with that Taskgate's settings as they are now (``taskgate worker`` runs it)."""
    if _claimed is not None:
        _claimed()
    return _adopted


def settings_of(app: Celery) -> Settings:
    """The settings ``app`` was made or adopted with; for an app taskgate never saw (a plain
    ``celery -A yourapp worker`` running taskgate's tasks), this process's TASKGATE_*
    environment beside the app's broker (:func:`settings_for`; the running app is not changed)."""
    settings = getattr(app, "taskgate_settings", None)
    if not isinstance(settings, Settings):
        settings = app.taskgate_settings = settings_for(app, get_settings())
    return settings

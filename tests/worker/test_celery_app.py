"""``worker.celery_app``: how taskgate adopts a user's own Celery app (pure configuration: what
runs on it is tested in tests/api/test_router.py and the tutorial's `up --app` test)."""

from __future__ import annotations

import pytest
from celery import Celery

from taskgate.config import Settings
from taskgate.worker.celery_app import adopt, create_celery_app, settings_for, settings_of

REDIS = "redis://127.0.0.1:1/0"


def unset() -> Settings:
    return Settings(redis_url=None, broker_url=None)


def test_without_taskgate_urls_the_apps_broker_is_taskgates() -> None:
    app = Celery("user", broker="redis://10.0.0.5:6379/2")
    assert settings_for(app, unset()).redis_url == "redis://10.0.0.5:6379/2"
    rabbit = Celery("user", broker="amqp://guest@10.0.0.6//", backend="redis://10.0.0.5:6379/3")
    chosen = settings_for(rabbit, unset())
    assert (chosen.broker_url, chosen.redis_url) == ("amqp://guest@10.0.0.6//", "redis://10.0.0.5:6379/3")
    assert rabbit.conf.broker_url == "amqp://guest@10.0.0.6//"  # settings_for changes nothing


def test_taskgate_urls_become_the_apps_and_its_own_settings_stay() -> None:
    class Config:
        worker_prefetch_multiplier = 8
        task_routes = {"user.*": {"queue": "user"}}

    app = Celery("user", broker="redis://localhost:6379/0", backend="redis://localhost:6379/0")
    app.config_from_object(Config)
    settings = adopt(app, Settings(redis_url=REDIS, task_modules=["tasks"]))  # type: ignore[arg-type]
    assert settings.redis_url == REDIS
    assert (app.conf.broker_url, app.conf.result_backend) == (REDIS, REDIS)
    assert app.conf.worker_prefetch_multiplier == 8  # the app's own value is kept
    assert app.conf.task_routes == {"user.*": {"queue": "user"}}
    assert app.conf.include[-2:] == ["tasks", "taskgate.tasks"]
    assert app.conf.worker_consumer == "taskgate.worker.consumer:Consumer"
    assert app.conf.broker_transport_options["visibility_timeout"] == settings.visibility_timeout
    assert settings_of(app) is settings


def test_an_app_with_celerys_default_prefetch_takes_one_at_a_time() -> None:
    app = Celery("user", broker="redis://localhost:6379/0")
    adopt(app, Settings(redis_url=REDIS))
    assert app.conf.worker_prefetch_multiplier == 1


def test_worker_prefetch_sets_how_many_messages_a_process_holds() -> None:
    settings = Settings(redis_url=REDIS, worker_prefetch=3)  # type: ignore[arg-type]
    assert create_celery_app(settings).conf.worker_prefetch_multiplier == 3
    app = Celery("user", broker="redis://localhost:6379/0")
    adopt(app, settings)
    assert app.conf.worker_prefetch_multiplier == 3


def test_a_plain_app_taskgate_never_saw_is_read_not_changed() -> None:
    app = Celery("plain", broker="amqp://guest@10.0.0.6//")
    settings = settings_of(app)
    assert app.conf.broker_url == "amqp://guest@10.0.0.6//"
    assert settings_of(app) is settings


def test_a_worker_importing_a_taskgate_made_with_an_app_runs_that_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Taskgate(celery_app=app)`` at a module's top reads nothing when made (no settings yet);
    a ``taskgate worker`` importing that module finds the app (``adopted()``), adopted with the
    settings as they are when the worker starts."""
    from taskgate import Taskgate
    from taskgate.worker import celery_app

    monkeypatch.setattr(celery_app, "_claimed", None)  # restored after: other tests' apps stay theirs
    monkeypatch.setattr(celery_app, "_adopted", None)
    for name in ("TASKGATE_REDIS_URL", "TASKGATE_BROKER_URL", "TASKGATE_RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    app = Celery("user")  # no broker of its own: nothing to adopt it with yet
    Taskgate(celery_app=app)
    monkeypatch.setenv("TASKGATE_REDIS_URL", REDIS)  # as `taskgate up` sets it for its worker
    assert celery_app.adopted() is app
    assert app.conf.broker_url == REDIS and settings_of(app).redis_url == REDIS

"""Logging: plain text by default, one JSON object per line with ``--log-format json``.

JSON lines carry ``task_id`` (and ``task``) wherever one is known: the API's "accepted" line
and every line a worker logs while running the task, so one id follows a task from the request
to the worker.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import orjson

#: Environment variable that carries the format to child processes (``taskgate up``).
FORMAT_ENV = "TASKGATE_LOG_FORMAT"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "task_id"?, "task"?, "exc"?}`` per record."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        task_id, task = getattr(record, "task_id", None), getattr(record, "task_name", None)
        if task_id is None:
            from celery._state import get_current_task

            current = get_current_task()
            if current is not None and current.request.id:
                task_id, task = current.request.id, current.name
        if task_id and task_id != "???":
            data["task_id"] = task_id
            if task:
                data["task"] = task
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def json_enabled() -> bool:
    """True when this process was asked for JSON logs."""
    return os.environ.get(FORMAT_ENV, "text") == "json"


def setup(level: str) -> None:
    """Send taskgate's own loggers to stderr in the chosen format."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if json_enabled()
                         else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("taskgate")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def uvicorn_config(level: str) -> dict[str, Any] | None:
    """uvicorn's ``log_config`` for JSON lines, or None to keep uvicorn's own."""
    if not json_enabled():
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "taskgate.service.logs.JsonFormatter"}},
        "handlers": {"default": handler},
        "loggers": {name: {"handlers": ["default"], "level": level.upper(), "propagate": False}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def use_json_in_celery(logger: logging.Logger, **_: Any) -> None:
    """Celery's after_setup_logger / after_setup_task_logger: JSON on every handler."""
    if json_enabled():
        for handler in logger.handlers:
            handler.setFormatter(JsonFormatter())

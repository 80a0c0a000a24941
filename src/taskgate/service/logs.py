"""Logging: plain text by default, one JSON object per line with ``--log-format json``.

JSON lines carry ``task_id`` (and ``task``) wherever one is known: the API's "accepted" line
and every line a worker logs while running the task, so one id follows a task from the request
to the worker. While tracing (``taskgate.tracing``), they also carry the OpenTelemetry
``trace_id`` and ``span_id`` of the span current as they are logged (the worker's ``taskgate
run`` span while a task runs, the request's span in the API) or that they name: the accepted
line names its ``taskgate submit`` span. A worker's line about a task outside its span carries
the trace id of the task's message. A task's ``trace_id`` is its record's
(``GET /tasks/{task_id}``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import orjson

from .. import tracing

#: Environment variable that carries the format to child processes (``taskgate up``).
FORMAT_ENV = "TASKGATE_LOG_FORMAT"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "task_id"?, "task"?, "trace_id"?, "span_id"?,
    "exc"?}`` per record. The ids come from the record's ``task_id``/``task_name`` and
    ``trace_ids`` (a ``(trace id, span id)`` pair) extras, else from the Celery task running
    and the span current; a line about a Celery task logged outside any span (Celery's own
    ``succeeded`` line, after the run's span ended) has the trace id its message carries."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        task_id, task = getattr(record, "task_id", None), getattr(record, "task_name", None)
        running: Any = None
        if task_id is None:
            from celery._state import get_current_task

            current = get_current_task()
            if current is not None and current.request.id:
                task_id, task, running = current.request.id, current.name, current.request
            else:
                task_id, task, running = _received(record)
        if task_id and task_id != "???":
            data["task_id"] = task_id
            if task:
                data["task"] = task
        ids = getattr(record, "trace_ids", None) or tracing.current_ids()
        if ids:
            data["trace_id"], data["span_id"] = ids
        elif running is not None and (carried := tracing.carried_trace_id(running)):
            data["trace_id"] = carried  # Celery's own lines about it, once its run's span ended
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def _received(record: logging.LogRecord) -> tuple[str | None, str | None, Any]:
    """A worker's "received" line: Celery gives the task's id and name as the record's
    ``data``; the headers of the message (its trace) are those of the request its main process
    just built (``worker.runtime.received_headers``; a taskgate task's). (None, None, None) for
    any other line."""
    data = getattr(record, "data", None)
    if not (record.name.startswith("celery") and isinstance(data, dict) and isinstance(data.get("id"), str)):
        return None, None, None
    task_id, name = data["id"], data.get("name")
    runtime = sys.modules.get("taskgate.worker.runtime")  # imported only in a worker
    headers = runtime.received_headers(task_id) if runtime is not None else None
    return task_id, name if isinstance(name, str) else None, headers


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


def setup_root(level: str) -> None:
    """JSON lines for every logger of a process whose other libraries log to the root logger
    (Flower, through tornado): only with ``--log-format json``."""
    if json_enabled():
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(level.upper())


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

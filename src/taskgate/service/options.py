"""What the ``taskgate`` commands share: their common options, and the steps each command
takes before it starts (the log format, OpenTelemetry, how to name this command)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ..config import Settings
from ..exceptions import ConfigurationError
from . import logs
from .settings import cli_settings

Host = Annotated[str, typer.Option(help="Interface the API (with `up --app`, your app) binds to.")]
Port = Annotated[int, typer.Option(min=1, max=65535, help="TCP port of the API.")]
Concurrency = Annotated[int, typer.Option(min=1, help="Worker processes in the Celery pool.")]
ApiWorkers = Annotated[int, typer.Option(
    min=1, help="API processes sharing the port (uvicorn's supervisor: one listening socket, a child "
    "that dies is restarted). /metrics then sums their counters (Prometheus multiprocess mode, in "
    "PROMETHEUS_MULTIPROC_DIR or a temporary directory). About one per core.")]
LogLevel = Annotated[str, typer.Option(help="Log level: debug, info, warning or error.")]
TaskModules = Annotated[str | None, typer.Option(
    help="Comma-separated modules that declare your tasks (default TASKGATE_TASK_MODULES), "
    "imported from this directory. If one of them makes a taskgate.Taskgate(celery_app=...), that "
    "Celery app is the one run, your plain Celery tasks included.", show_default=False)]
LogFormat = Annotated[str | None, typer.Option(
    help="Log lines as `text` or `json` (one object per line, with task_id where known); default "
    "TASKGATE_LOG_FORMAT or text.", show_default=False)]


def use_log_format(value: str | None) -> None:
    """Check the --log-format option (default TASKGATE_LOG_FORMAT) and set it for this process
    and the ones it starts."""
    value = value or os.environ.get(logs.FORMAT_ENV, "text")
    if value not in ("text", "json"):
        typer.echo("taskgate: --log-format must be text or json", err=True)
        raise typer.Exit(2)
    os.environ[logs.FORMAT_ENV] = value


def own_command() -> str:
    """How to type this command from this directory: ``.venv/bin/taskgate`` after `make run`."""
    script = Path(sys.executable).parent / "taskgate"
    if not script.exists():
        return "taskgate"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def traced(start: Callable[[Settings], None], settings: Settings | None = None) -> None:
    """``start(settings)`` (this command's settings by default): with TASKGATE_OTEL=on,
    OpenTelemetry set up or checked (``telemetry``); exit 2 saying what to install if it cannot be."""
    try:
        start(settings or cli_settings())
    except ConfigurationError as exc:
        typer.echo(f"taskgate: {exc}", err=True)
        raise typer.Exit(2) from exc

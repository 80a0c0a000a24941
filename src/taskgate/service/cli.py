"""The ``taskgate`` command line (Typer): api, worker, flower, up (service/up.py), doctor, traces, and
the keys, dead-letters and schedules groups (service/admin.py)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from ..config import is_loopback
from ..exceptions import ConfigurationError
from . import admin, logs, telemetry
from .options import (
    ApiWorkers,
    Concurrency,
    Host,
    LogFormat,
    LogLevel,
    Port,
    TaskModules,
    traced,
    use_log_format,
)
from .settings import cli_settings as _settings
from .up import up

if TYPE_CHECKING:
    from celery import Celery

cli = typer.Typer(
    name="taskgate",
    help="A truthful, non-blocking HTTP front door for Celery task queues.\n\n"
    "Configuration comes from TASKGATE_* environment variables (see README.md). "
    "Without TASKGATE_REDIS_URL, `taskgate up` starts an embedded Valkey server.",
    no_args_is_help=True,
    add_completion=False,
    # Plain help text: rich's panels cut option help short in 80 columns, and read "[otel]" in
    # "taskgate[otel]" as markup (dropping it).
    rich_markup_mode=None,
)

@cli.command()
def api(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    log_level: LogLevel = "info",
    log_format: LogFormat = None,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log",
                                             help="Log every request: uvicorn's access line and, for "
                                             "each submit, taskgate's `accepted` line with the task "
                                             "id.")] = True,
    workers: ApiWorkers = 1,
) -> None:
    """Run the HTTP API (uvicorn): one process, or --workers N sharing the port. Beyond one
    machine, run one per machine behind a load balancer."""
    from .serve import serve

    use_log_format(log_format)
    logs.setup(log_level)
    try:
        code = serve(_settings(), host=host, port=port, log_level=log_level, access_log=access_log,
                     workers=workers)
    except ConfigurationError as exc:
        typer.echo(f"taskgate: {exc}", err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


@cli.command()
def worker(
    concurrency: Concurrency = 2,
    log_level: LogLevel = "info",
    name: Annotated[str | None, typer.Option(help="Celery node name (default taskgate-<pid>@<host>); "
                                             "unique per worker.")] = None,
    log_format: LogFormat = None,
    queues: Annotated[str | None, typer.Option(
        help="Comma-separated queues to consume; `default` stands for TASKGATE_DEFAULT_QUEUE (the "
        "only one consumed without this option). Tasks declare theirs with "
        "@taskgate.task(queue=...).", show_default=False)] = None,
    task_events: Annotated[bool, typer.Option(
        "--task-events/--no-task-events",
        help="Send Celery task events from the start. Off by default: they are a publish per task "
        "state, costly on short tasks, and a running Flower switches them on by itself.")] = False,
    tasks: TaskModules = None,
) -> None:
    """Run a Celery worker for taskgate's tasks. Run several, on several machines, to scale."""
    from celery.signals import after_setup_logger, after_setup_task_logger

    use_log_format(log_format)
    after_setup_logger.connect(logs.use_json_in_celery, weak=False)
    after_setup_task_logger.connect(logs.use_json_in_celery, weak=False)
    app = _celery_app(tasks)
    traced(telemetry.for_worker)
    app.start([*(["--quiet"] if logs.json_enabled() else []), "worker",
               f"--loglevel={log_level.upper()}", f"--concurrency={concurrency}",
               f"--hostname={name or f'taskgate-{os.getpid()}@%h'}",
               *(["--task-events"] if task_events else []), "--without-gossip", "--without-mingle",
               *([f"--queues={_queue_names(queues, app.conf.task_default_queue)}"] if queues else [])])


def _celery_app(tasks: str | None) -> Celery:
    """The Celery app of this deployment, its task modules imported (``tasks``, else
    TASKGATE_TASK_MODULES): the one a module handed to taskgate (``Taskgate(celery_app=...)``), or
    taskgate's own. The worker runs it and Flower shows it, so both know the same tasks."""
    from ..registry import load
    from ..worker.celery_app import adopted, create_celery_app

    if tasks is not None:
        os.environ["TASKGATE_TASK_MODULES"] = tasks
    settings = _settings()
    try:
        load(settings.task_modules)  # a module may hand its own Celery app to taskgate
    except ImportError as exc:
        typer.echo(f"taskgate: cannot import the task modules {','.join(settings.task_modules)} ({exc}); run "
                   "from the directory that holds them, or set PYTHONPATH", err=True)
        raise typer.Exit(2) from exc
    return adopted() or create_celery_app(settings)


def _queue_names(queues: str, default: str) -> str:
    """The queues option with the word ``default`` standing for TASKGATE_DEFAULT_QUEUE."""
    names = [name.strip() for name in queues.split(",") if name.strip()]
    return ",".join(dict.fromkeys(default if name == "default" else name for name in names))


@cli.command()
def flower(
    host: Annotated[str, typer.Option(help="Interface Flower binds to.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port of Flower.")] = 5555,
    tasks: TaskModules = None,
) -> None:
    """Run Flower, Celery's monitoring UI, on loopback by default. Bound elsewhere it needs
    TASKGATE_FLOWER_BASIC_AUTH=user:password; its API is never opened to anonymous callers.
    It loads the task modules the workers load (give it the same --tasks), so it knows their
    tasks (its registered tasks, rate and time limit controls)."""
    app = _celery_app(tasks)  # first: the settings are read once, with the task modules named
    settings = _settings()
    argv = ["flower", f"--address={host}", f"--port={port}"]
    if settings.flower_basic_auth:
        if ":" not in settings.flower_basic_auth:
            typer.echo("taskgate: TASKGATE_FLOWER_BASIC_AUTH must be user:password", err=True)
            raise typer.Exit(2)
        argv.append(f"--basic-auth={settings.flower_basic_auth}")
    elif not is_loopback(host):
        typer.echo(f"taskgate: refusing to serve Flower on {host} without a password: its UI and API "
                   "can revoke and run tasks. Set TASKGATE_FLOWER_BASIC_AUTH=user:password, or bind "
                   "to 127.0.0.1 (the default)", err=True)
        raise typer.Exit(2)
    os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)  # never open Flower's API anonymously
    if logs.json_enabled():  # tornado's own text format off: JSON lines as every other process
        argv.append("--logging=none")
        logs.setup_root("info")
    app.start(argv)


cli.command()(up)  # service/up.py: taskgate up, in the help between flower and doctor


@cli.command()
def doctor(
    host: Annotated[str, typer.Option(help="The address the API binds to in this deployment.")] = "127.0.0.1",
) -> None:
    """Check the running configuration and Redis; print each problem with its fix (exit 1 if any)."""
    from .doctor import diagnose

    findings = diagnose(_settings(), host)
    for finding in findings:
        mark = "ok     " if finding.ok else "PROBLEM"
        typer.echo(f"{mark} {finding.check}: {finding.detail}")
        if not finding.ok:
            typer.echo(f"        fix: {finding.fix}")
    problems = sum(not finding.ok for finding in findings)
    typer.echo(f"{problems} problem(s)")
    raise typer.Exit(1 if problems else 0)


@cli.command()
def traces(
    host: Annotated[str, typer.Option(help="Interface the sink binds to.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (OTLP/HTTP's is 4318).")] = 4318,
    json: Annotated[bool, typer.Option("--json", help="One JSON object per span.")] = False,
) -> None:
    """Print the spans OpenTelemetry exporters send here over OTLP/HTTP, one line each: a local
    sink for trying TASKGATE_OTEL=on without a collector (run it, then `taskgate up` with
    TASKGATE_OTEL=on in another terminal). Needs pip install 'taskgate[otel]'."""
    try:
        from .trace_sink import serve

        serve(host, port, json)
    except ImportError as exc:
        typer.echo(f"taskgate: traces needs OpenTelemetry's protocol ({exc}): {telemetry.INSTALL}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:
        typer.echo(f"taskgate: cannot listen on {host}:{port} ({exc})", err=True)
        raise typer.Exit(2) from exc


cli.add_typer(admin.keys, name="keys")
cli.add_typer(admin.dead, name="dead-letters")
cli.add_typer(admin.schedules, name="schedules")


def main() -> None:
    """Entry point of the ``taskgate`` script."""
    cli()

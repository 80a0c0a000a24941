"""The ``taskgate`` command line (Typer): up, api, worker, flower, doctor, traces."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..config import Settings, get_settings, is_loopback
from ..exceptions import ConfigurationError
from . import admin, logs, telemetry
from .instance import AlreadyRunning, Claim, Instance
from .settings import cli_settings as _settings
from .supervisor import port_is_free

if TYPE_CHECKING:
    from celery import Celery

    from .supervisor import Supervisor

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


def _log_format(value: str | None) -> None:
    value = value or os.environ.get(logs.FORMAT_ENV, "text")
    if value not in ("text", "json"):
        typer.echo("taskgate: --log-format must be text or json", err=True)
        raise typer.Exit(2)
    os.environ[logs.FORMAT_ENV] = value


def _own_command() -> str:
    """How to type this command from this directory: ``.venv/bin/taskgate`` after `make run`."""
    script = Path(sys.executable).parent / "taskgate"
    if not script.exists():
        return "taskgate"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


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

    _log_format(log_format)
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

    _log_format(log_format)
    after_setup_logger.connect(logs.use_json_in_celery, weak=False)
    after_setup_task_logger.connect(logs.use_json_in_celery, weak=False)
    app = _celery_app(tasks)
    _traced(telemetry.for_worker)
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


def _traced(start: Callable[[Settings], None], settings: Settings | None = None) -> None:
    """``start(settings)`` (this command's settings by default): with TASKGATE_OTEL=on,
    OpenTelemetry set up or checked (``telemetry``); exit 2 saying what to install if it cannot be."""
    try:
        start(settings or _settings())
    except ConfigurationError as exc:
        typer.echo(f"taskgate: {exc}", err=True)
        raise typer.Exit(2) from exc


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


@cli.command()
def up(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    flower_port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port of Flower.")] = 5555,
    with_flower: Annotated[bool, typer.Option("--flower/--no-flower",
                                              help="Also run Flower.")] = True,
    concurrency: Concurrency = 2,
    api_workers: Annotated[int, typer.Option(
        min=1, help="API processes sharing --port (`taskgate api --workers N`; with --app, uvicorn's "
        "--workers). A dead one is restarted.")] = 1,
    log_level: LogLevel = "info",
    log_format: LogFormat = None,
    app: Annotated[str | None, typer.Option(
        "--app", help="Serve your own FastAPI app, as MODULE:ATTRIBUTE (e.g. main:app, from this "
        "directory), instead of taskgate's API; the worker imports MODULE for your tasks.",
        show_default=False)] = None,
    reload: Annotated[bool, typer.Option(
        "--reload", help="With --app: restart your app and the worker when a .py file under this "
        "directory changes (hidden directories such as .venv aside; development only).")] = False,
) -> None:
    """Run everything in the foreground: embedded Valkey (unless TASKGATE_REDIS_URL is set),
    a local SMTP sink (unless TASKGATE_SMTP_URL is set), a worker, the API (or your app, with
    --app) and Flower. Ctrl-C stops all; a second Ctrl-C forces."""
    from ..api.app import auth_enabled
    from .serve import MULTIPROC_ENV, fresh_metrics_directory
    from .supervisor import Component, Supervisor

    try:
        settings = get_settings()
        auth_enabled(settings, host)
    except (ValueError, ConfigurationError) as exc:
        typer.echo(f"taskgate: {exc}", err=True)
        raise typer.Exit(2) from exc
    _traced(telemetry.check, settings)  # before anything starts: its api and worker trace
    module = _app_module(app, reload)
    if reload and api_workers > 1:
        typer.echo("taskgate: --reload runs one process of your app; leave out --api-workers", err=True)
        raise typer.Exit(2)
    _log_format(log_format)
    data_dir = Path(settings.data_dir).resolve()
    api_url, flower_url = f"http://{host}:{port}", f"http://127.0.0.1:{flower_port}"
    try:  # before starting anything: one `up` per data dir, and ports that are free
        claim = Claim(data_dir, Instance(pid=os.getpid(), api=api_url,
                                         flower=flower_url if with_flower else None))
    except AlreadyRunning as exc:
        typer.echo(f"taskgate: {exc}", err=True)
        raise typer.Exit(2) from exc
    busy = [f"{what} port {number} ({owner})" for what, bind, number, owner in
            [("API", host, port, "--port"), *([("Flower", "127.0.0.1", flower_port, "--flower-port")]
                                              if with_flower else [])]
            if not port_is_free(bind, number)]
    if busy:
        claim.release()
        typer.echo(f"taskgate: {' and '.join(busy)} already in use on this machine; choose another "
                   "with the option named, e.g. taskgate up --port 8001 --flower-port 5556", err=True)
        raise typer.Exit(2)
    supervisor = Supervisor(echo=lambda line: typer.echo(line, err=True))
    supervisor.install_signal_handlers()
    env = dict(os.environ)
    code = 1
    try:
        if settings.redis_url is None and settings.result_backend is None:
            url = _start_local(supervisor, env, "valkey", "taskgate.service.embedded",
                               "--data-dir", str(data_dir))
            env["TASKGATE_REDIS_URL"] = url
            claim.update(redis_url=url)
            typer.echo(f"taskgate: valkey  {url} (embedded, data in {data_dir / 'valkey'})")
        else:
            typer.echo(f"taskgate: redis   {settings.require_redis_url()} (external)")
        if settings.smtp_url is None:
            url = _start_local(supervisor, env, "smtp", "taskgate.service.smtp_sink",
                               "--dir", str(data_dir / "mail"))
            env["TASKGATE_SMTP_URL"] = url
            claim.update(smtp_url=url)
            typer.echo(f"taskgate: smtp    {url} (local sink, mail in {data_dir / 'mail'})")
        cmd = [sys.executable, "-m", "taskgate"]
        worker_cmd = [*cmd, "worker", f"--concurrency={concurrency}", f"--log-level={log_level}"]
        # The worker and Flower import the same task modules: your app's module first.
        tasks = [f"--tasks={','.join(dict.fromkeys([module, *settings.task_modules]))}"] if module else []
        worker_cmd.extend(tasks)
        if module is not None:
            # Your app's Taskgate cannot know its bind address: resolve TASKGATE_AUTH=auto here.
            env["TASKGATE_AUTH"] = "on" if auth_enabled(settings, host) else "off"
        # If `up` dies unannounced, the worker is killed at once (its unacknowledged tasks are
        # requeued by the next worker) rather than left finishing tasks against a stopped Valkey.
        supervisor.add(Component("worker", _reloading(worker_cmd) if reload else worker_cmd,
                                 death_signal=signal.SIGKILL), env)
        typer.echo(f"taskgate: worker  concurrency {concurrency}, broker "
                   f"{env.get('TASKGATE_BROKER_URL') or env['TASKGATE_REDIS_URL']}"
                   f"{', restarted when a .py file changes' if reload else ''}")
        auth = "auth on: send API keys" if auth_enabled(settings, host) else "auth off, loopback only"
        processes = f"; {api_workers} processes" if api_workers > 1 else ""
        if app is None:
            api_component = supervisor.add(Component("api", [*cmd, "api", f"--host={host}", f"--port={port}",
                                                             f"--log-level={log_level}",
                                                             f"--workers={api_workers}"]), env)
            typer.echo(f"taskgate: api     {api_url} (docs at /docs; {auth}{processes})")
        else:
            if api_workers > 1:  # uvicorn's --workers: taskgate's /metrics in your app sums them
                env[MULTIPROC_ENV] = str(fresh_metrics_directory(data_dir / "metrics"))
            api_component = supervisor.add(Component("app", [
                sys.executable, "-m", "uvicorn", app, f"--host={host}", f"--port={port}",
                f"--log-level={log_level}", "--timeout-graceful-shutdown=10",
                *([f"--workers={api_workers}"] if api_workers > 1 else []),
                *(["--reload", f"--reload-dir={Path.cwd()}"] if reload else [])]), env)
            typer.echo(f"taskgate: app     {api_url} (your {app}; taskgate's routes where you included "
                       f"tg.router, {auth}{processes})")
        if with_flower:
            supervisor.add(Component("flower", [*cmd, "flower", "--host=127.0.0.1",
                                                f"--port={flower_port}", *tasks]), env)
            typer.echo(f"taskgate: flower  {flower_url}")
        where = f"with TASKGATE_DATA_DIR={data_dir}"
        if data_dir == (Path.cwd() / ".taskgate").resolve():
            where = f"in this directory (or {where})"
        typer.echo(f"taskgate: cli     {_own_command()} doctor | keys | dead-letters | worker, from another "
                   f"terminal {where}, use this system")
        # "running" only once the API accepts connections: a curl right after it must not be refused.
        if supervisor.wait_listening(api_component, "127.0.0.1" if host in ("0.0.0.0", "::") else host, port):
            typer.echo("taskgate: running; Ctrl-C stops everything")
        code = supervisor.watch()
    finally:
        supervisor.stop()
        claim.release()
    typer.echo("taskgate: stopped" if code == 0 else "taskgate: stopped after a failure", err=True)
    raise typer.Exit(code)


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


def _app_module(app: str | None, reload: bool) -> str | None:
    """The module of ``--app MODULE:ATTRIBUTE`` (checked), or None without --app."""
    if app is None:
        if reload:
            typer.echo("taskgate: --reload needs --app (it reloads your app and its tasks)", err=True)
            raise typer.Exit(2)
        return None
    module, _, attribute = app.partition(":")
    if not module or not attribute:
        typer.echo(f"taskgate: --app {app!r}: give MODULE:ATTRIBUTE, e.g. --app main:app", err=True)
        raise typer.Exit(2)
    if not (Path.cwd() / (module.replace(".", "/") + ".py")).exists() and \
            not (Path.cwd() / module.replace(".", "/") / "__init__.py").exists():
        typer.echo(f"taskgate: --app {app!r}: no module {module!r} in {Path.cwd()}; run from the "
                   "directory that holds it", err=True)
        raise typer.Exit(2)
    return module


def _reloading(argv: list[str]) -> list[str]:
    """``argv`` run under watchfiles: restarted (SIGINT, then the worker's warm shutdown) when a
    .py file under this directory changes; killed if watchfiles dies (``bound``), as the worker
    is when ``up`` dies."""
    import shlex

    bound = [sys.executable, "-m", "taskgate.service.bound", str(int(signal.SIGKILL)), *argv]
    return [sys.executable, "-m", "watchfiles", "--filter=python", "--target-type=command",
            "--sigint-timeout=30", shlex.join(bound), str(Path.cwd())]


def _start_local(supervisor: Supervisor, env: dict[str, str], name: str, module: str,
                 *args: str) -> str:
    """Start a local server component that prints its URL first; return that URL."""
    from .supervisor import Component, python_module

    component = supervisor.add(Component(name, python_module(module, *args)), env, stdout=subprocess.PIPE)
    assert component.process is not None and component.process.stdout is not None
    url = component.process.stdout.readline().decode().strip()
    if not url:
        typer.echo(f"taskgate: the local {name} server did not start", err=True)
        raise typer.Exit(1)
    return url


cli.add_typer(admin.keys, name="keys")
cli.add_typer(admin.dead, name="dead-letters")
cli.add_typer(admin.schedules, name="schedules")


def main() -> None:
    """Entry point of the ``taskgate`` script."""
    cli()

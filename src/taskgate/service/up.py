"""``taskgate up``: the whole system in the foreground, under one supervisor (registered as a
command by ``service.cli``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..config import get_settings
from ..exceptions import ConfigurationError
from . import telemetry
from .instance import AlreadyRunning, Claim, Instance
from .options import Concurrency, Host, LogFormat, LogLevel, Port, own_command, traced, use_log_format
from .supervisor import port_is_free

if TYPE_CHECKING:
    from .supervisor import Supervisor


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
    traced(telemetry.check, settings)  # before anything starts: its api and worker trace
    module = _app_module(app, reload)
    if reload and api_workers > 1:
        typer.echo("taskgate: --reload runs one process of your app; leave out --api-workers", err=True)
        raise typer.Exit(2)
    use_log_format(log_format)
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
        typer.echo(f"taskgate: cli     {own_command()} doctor | keys | dead-letters | worker, from another "
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

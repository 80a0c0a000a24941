"""The CLI's administration commands: ``taskgate keys`` (API keys), ``taskgate dead-letters`` and
``taskgate schedules``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..exceptions import TaskGateError
from .settings import cli_settings as _settings

if TYPE_CHECKING:
    from ..producer import Producer

keys = typer.Typer(help="API keys (stored hashed in Redis).", no_args_is_help=True)


def _redis() -> Any:
    from .. import connections

    return connections.blocking(_settings().require_redis_url(), connections.CLI_TIMEOUT)


@keys.command("create")
def keys_create(
    owner: Annotated[str, typer.Option(help="Who the key belongs to; tasks are visible per owner.")],
    admin: Annotated[bool, typer.Option("--admin", help="May see every owner's tasks and /metrics.")] = False,
) -> None:
    """Create a key and print it once (alone on the last line). Only its hash is stored."""
    from .. import auth

    try:
        key_id, key = auth.create(_redis(), owner, admin)
    except ValueError as exc:
        typer.echo(f"taskgate: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"created key {key_id} for {owner}{' (admin)' if admin else ''}; store it now, it is "
               "not shown again:")
    typer.echo(key)


@keys.command("list")
def keys_list() -> None:
    """List keys: id, owner, admin (never the secrets)."""
    from .. import auth

    for entry in auth.listing(_redis()):
        typer.echo(f"{entry['key_id']}  {entry['owner']}  {'admin' if entry['admin'] else 'user'}")


@keys.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (from `keys list`).")]) -> None:
    """Revoke a key: every API replica refuses it as soon as the notice reaches it (milliseconds;
    at worst TASKGATE_KEY_CACHE_TTL seconds later)."""
    from .. import auth

    if not auth.revoke(_redis(), key_id):
        typer.echo(f"taskgate: no key {key_id} (unknown, or already revoked)", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


dead = typer.Typer(help="Tasks that exhausted their retries or deliveries.", no_args_is_help=True)


def _with_producer(action: Callable[[Producer], Awaitable[Any]]) -> Any:
    """Run ``action`` with a producer on the configured Redis; errors become messages."""
    from ..producer import Producer

    async def run() -> Any:
        producer = Producer.from_settings(_settings())
        try:
            return await action(producer)
        finally:
            await producer.close()

    try:
        return asyncio.run(run())
    except TaskGateError as exc:
        typer.echo(f"taskgate: {exc}", err=True)
        raise typer.Exit(1) from exc


@dead.command("list")
def dead_list(
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List dead-lettered tasks."""
    from ..api.schemas import DeadLetter

    records, _ = _with_producer(lambda producer: producer.reader.dead_letters(limit, None))
    letters = [DeadLetter.from_record(record, dead_at) for record, dead_at in records]
    if as_json:
        for letter in letters:
            typer.echo(letter.model_dump_json())
        return
    if not letters:
        typer.echo("no dead letters")
    for letter in letters:
        error = f"{letter.error.type}: {letter.error.message}" if letter.error else ""
        typer.echo(f"{letter.task_id}  {letter.name}  {letter.reason}  attempts={letter.attempts}  "
                   f"{letter.dead_at:%Y-%m-%d %H:%M:%S}Z  {error}")


@dead.command("requeue")
def dead_requeue(task_id: Annotated[str, typer.Argument(help="The dead task's id.")]) -> None:
    """Run a dead-lettered task again (same id and arguments)."""
    _with_producer(lambda producer: producer.control.requeue(task_id))
    typer.echo(f"requeued {task_id}")


@dead.command("drop")
def dead_drop(task_id: Annotated[str, typer.Argument(help="The dead task's id.")]) -> None:
    """Remove a task from the dead letters."""
    _with_producer(lambda producer: producer.control.drop(task_id))
    typer.echo(f"dropped {task_id}")


schedules = typer.Typer(help="Schedules: cron and intervals, fired by the workers (no beat).",
                        no_args_is_help=True)


def _schedule_line(schedule: Any) -> str:
    when = (f"cron {schedule.cron!r} ({schedule.timezone})" if schedule.cron
            else f"every {schedule.every:g} s" if schedule.every is not None else "timing unreadable")
    state = "" if schedule.enabled else "  paused"
    shown = schedule.next_run_at if schedule.enabled else None
    next_run = f"{shown:%Y-%m-%d %H:%M:%S}Z" if shown else "-"
    problem = f"  problem: {schedule.problem}" if schedule.problem else ""
    return f"{schedule.schedule_id}  {schedule.task}  {when}  next={next_run}{state}{problem}"


@schedules.command("list")
def schedules_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List every schedule (all owners), oldest first."""
    from ..api.routes.schedules import ScheduleInfo

    async def every_page(producer: Producer) -> list[Any]:
        found: list[Any] = []
        offset: int | None = 0
        while offset is not None:
            page, offset = await producer.schedules.list(limit=500, offset=offset)
            found += page
        return found

    found = _with_producer(every_page)
    if as_json:
        for schedule in found:
            typer.echo(ScheduleInfo.of(schedule).model_dump_json())
        return
    if not found:
        typer.echo("no schedules")
    for schedule in found:
        typer.echo(_schedule_line(schedule))


@schedules.command("add")
def schedules_add(
    task: Annotated[str, typer.Argument(help="The task to run (see `GET /tasks/catalogue`).")],
    cron: Annotated[str | None, typer.Option(help="Five-field cron, e.g. '*/5 * * * *'.")] = None,
    every: Annotated[float | None, typer.Option(help="Or: every so many seconds (1 s to a year).")] = None,
    timezone: Annotated[str, typer.Option(help="The IANA time zone of the cron expression.")] = "UTC",
    arguments: Annotated[str, typer.Option("--args", help="The task's arguments as a JSON object.")] = "{}",
    name: Annotated[str | None, typer.Option(help="A name to show.")] = None,
    overlap: Annotated[str, typer.Option(help="allow, or skip a tick while the last run runs.")] = "allow",
    catchup: Annotated[str, typer.Option(help="After downtime: fire no missed tick (none) or one.")] = "none",
    owner: Annotated[str | None, typer.Option(help="Whose schedule it is (an API key's owner).")] = None,
    paused: Annotated[bool, typer.Option(help="Create it paused.")] = False,
) -> None:
    """Create a schedule; prints its id and next run."""
    import orjson

    from ..auth import Caller
    from ..producer.submit import SYSTEM

    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError as exc:
        typer.echo(f"taskgate: --args is not JSON: {exc}", err=True)
        raise typer.Exit(2) from exc
    if not isinstance(parsed, dict):
        typer.echo("taskgate: --args must be a JSON object", err=True)
        raise typer.Exit(2)
    caller = SYSTEM if owner is None else Caller(owner=owner)
    made = _with_producer(lambda producer: producer.schedules.create(
        task, parsed, cron=cron, every=every, timezone=timezone, name=name,
        overlap=overlap, catchup=catchup, enabled=not paused, caller=caller))  # type: ignore[arg-type]
    typer.echo(_schedule_line(made))


@schedules.command("pause")
def schedules_pause(schedule_id: Annotated[str, typer.Argument(help="The schedule's id.")]) -> None:
    """Stop firing until resumed."""
    typer.echo(_schedule_line(_with_producer(lambda producer: producer.schedules.pause(schedule_id))))


@schedules.command("resume")
def schedules_resume(schedule_id: Annotated[str, typer.Argument(help="The schedule's id.")]) -> None:
    """Fire again, from the first tick after now."""
    typer.echo(_schedule_line(_with_producer(lambda producer: producer.schedules.resume(schedule_id))))


@schedules.command("run")
def schedules_run(schedule_id: Annotated[str, typer.Argument(help="The schedule's id.")]) -> None:
    """Queue one run now, outside the schedule; prints the run's task id."""
    typer.echo(_with_producer(lambda producer: producer.schedules.run_now(schedule_id)))


@schedules.command("delete")
def schedules_delete(schedule_id: Annotated[str, typer.Argument(help="The schedule's id.")]) -> None:
    """Delete a schedule (its runs stay, as tasks)."""
    _with_producer(lambda producer: producer.schedules.delete(schedule_id))
    typer.echo(f"deleted {schedule_id}")

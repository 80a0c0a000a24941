"""What an open Taskgate does in the background (``producer/startup.py``): the key layout's
check, and its catalogue published at open, republished while open, withdrawn at close."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import pytest
from myapp.tasks import make_invoice
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from taskgate import Taskgate, constants
from taskgate.exceptions import TaskGateError
from taskgate.producer import startup
from taskgate.records import keys
from taskgate.records.workers import CATALOGUE_FRESH, CatalogueEntry, StoredEntry, encode_entry, parse_stored

from .. import helpers
from ..helpers import DATA_DIR, with_gate

#: A user's app serving no task of its own: it submits the built-in add through the library.
BUILTINS_ONLY = """
import asyncio, logging, sys
from taskgate import Taskgate
from taskgate.tasks.arithmetic import add

logging.basicConfig(level=logging.WARNING)

async def main():
    async with Taskgate(redis_url=sys.argv[1], data_dir=sys.argv[2], auth=False) as tg:
        assert tg.catalogue == {}
        job = await add.submit(x=1, y=2)
        assert (await job.status()).name == "add"  # recorded (a worker on this Redis may run it)

asyncio.run(main())
"""


def test_an_app_serving_no_task_of_its_own_starts_without_a_warning(redis_url: str, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", BUILTINS_ONLY, redis_url, str(DATA_DIR)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "could not publish" not in run.stderr, run.stderr


async def _stored(redis: AsyncRedis, name: str, after: float = 0.0, by: str = "") -> StoredEntry:
    """``name``'s stored entry once it was published later than ``after`` (by ``by``, if
    given), polled within 10 s."""
    async with asyncio.timeout(10):
        while True:  # polling Redis: what is stored there announces nothing
            read = parse_stored(cast(bytes | None, await redis.hget(keys.CATALOGUE, name)))
            if read is not None and (read.published_at or 0.0) > after and by in ("", read.by):
                return read
            await asyncio.sleep(0.01)


def test_an_open_taskgate_republishes_its_catalogue(own_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Published at open, then again every CATALOGUE_REFRESH seconds (shortened here) while open:
    the entry's published_at moves on, which only the refresh does."""
    monkeypatch.setattr(constants, "CATALOGUE_REFRESH", 0.05)
    name = make_invoice.spec.celery_name

    async def body(tg: Taskgate) -> None:
        redis = tg.producer.backend.redis
        first = await _stored(redis, name)
        assert first.published_at is not None
        await _stored(redis, name, after=first.published_at)

    with_gate(own_redis_url, body)


def _store_others(url: str, now: float) -> None:
    """Another API's fresh entry, one no API republished within the window, and one an earlier
    version wrote (no published_at, no by: its API may still run)."""
    client = Redis.from_url(url)
    try:
        client.hset(keys.CATALOGUE, mapping={
            "taskgate.gone": encode_entry(CatalogueEntry(module="app.gone", queue="q"), now - CATALOGUE_FRESH - 1,
                                          "gone-api"),
            "taskgate.other": encode_entry(CatalogueEntry(module="app.other", queue="q"), now - 5, "other-api"),
            "taskgate.legacy": b'{"module": "app.legacy", "queue": "q"}'})
    finally:
        client.close()


def _catalogue(url: str) -> dict[bytes, StoredEntry | None]:
    client = Redis.from_url(url)
    try:
        return {name: parse_stored(raw) for name, raw in cast(dict[bytes, bytes], client.hgetall(keys.CATALOGUE)).items()}
    finally:
        client.close()


def test_publishing_deletes_only_entries_no_running_api_republished(own_redis_url: str) -> None:
    now = time.time()
    _store_others(own_redis_url, now)

    async def body(tg: Taskgate) -> dict[bytes, StoredEntry | None]:
        redis = tg.producer.backend.redis
        await _stored(redis, make_invoice.spec.celery_name)  # the publish at open happened
        # the stale entries go in the round trip after it (a loaded run read between the two)
        async with asyncio.timeout(10):
            while True:  # polling Redis: what is stored there announces nothing
                if not await redis.hexists(keys.CATALOGUE, "taskgate.gone"):
                    break
                await asyncio.sleep(0.01)
        return _catalogue(own_redis_url)

    stored = with_gate(own_redis_url, body)
    assert b"taskgate.gone" not in stored
    assert stored[b"taskgate.other"] == StoredEntry(CatalogueEntry(module="app.other", queue="q"), now - 5, "other-api")
    assert stored[b"taskgate.legacy"] == StoredEntry(CatalogueEntry(module="app.legacy", queue="q"))


def _by(tg: Taskgate) -> str:
    """The name ``tg`` signs its entries with."""
    assert tg._publication is not None
    return tg._publication.by


def test_a_closing_taskgate_withdraws_the_entries_it_published_last(own_redis_url: str) -> None:
    """Two replicas serving the same tasks: the first to close published before the other, so
    it withdraws nothing; the last one marks withdrawn every entry it published (a plain ``make
    run`` after one with more task modules then finds none of those in doctor's report at once;
    workers still read their module). Other APIs' entries stay as they were."""
    now = time.time()
    _store_others(own_redis_url, now)
    name = make_invoice.spec.celery_name
    first, last = (Taskgate(redis_url=own_redis_url, data_dir=helpers.DATA_DIR) for _ in range(2))

    async def main() -> tuple[str, dict[bytes, StoredEntry | None], dict[bytes, StoredEntry | None]]:
        try:
            await first.open()
            await _stored(first.producer.backend.redis, name, by=_by(first))
            await last.open()
            last_by = _by(last)
            await _stored(last.producer.backend.redis, name, by=last_by)
            await first.close()
            one_closed = _catalogue(own_redis_url)
        finally:
            await first.close()
            await last.close()
        return last_by, one_closed, _catalogue(own_redis_url)

    last_by, one_closed, both_closed = asyncio.run(main())
    kept = one_closed[name.encode()]
    assert kept is not None and kept.by == last_by and not kept.withdrawn, one_closed
    withdrawn = both_closed[name.encode()]
    assert withdrawn is not None and withdrawn.withdrawn and withdrawn.by == last_by, both_closed
    assert withdrawn.entry == CatalogueEntry(module="myapp.tasks", queue="celery")
    ours = {field for field, read in one_closed.items() if read is not None and read.by == last_by}
    assert {field for field, read in both_closed.items() if read is not None and read.withdrawn} == ours
    assert both_closed[b"taskgate.other"] == one_closed[b"taskgate.other"] == StoredEntry(
        CatalogueEntry(module="app.other", queue="q"), now - 5, "other-api")
    assert both_closed[b"taskgate.legacy"] == StoredEntry(CatalogueEntry(module="app.legacy", queue="q"))


def test_the_refresh_outlives_redis_failing_and_says_so_once_per_outage(
        own_redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Writes paused on the server (CLIENT PAUSE WRITE) make each round miss its deadline; the
    rounds go on, one warning per outage, and a round succeeds again once writes resume."""
    caplog.set_level(logging.WARNING, logger="taskgate")
    monkeypatch.setattr(constants, "CATALOGUE_REFRESH", 0.02)
    rounds: list[bool] = []  # each refresh round's outcome
    ended: asyncio.Event | None = None  # set at the end of each round
    real = startup.Publication._write

    async def counted(publication: startup.Publication, *, declared_limits: bool) -> None:
        try:
            await real(publication, declared_limits=declared_limits)
            if not declared_limits:
                rounds.append(True)
        except TaskGateError:
            rounds.append(False)
            raise
        finally:
            if ended is not None:
                ended.set()

    monkeypatch.setattr(startup.Publication, "_write", counted)

    async def until(outcomes: list[bool]) -> None:
        """Until the latest rounds ended so."""
        nonlocal ended
        ended = asyncio.Event()
        async with asyncio.timeout(10):
            while rounds[-len(outcomes):] != outcomes:
                ended.clear()
                await ended.wait()

    async def body(tg: Taskgate) -> None:
        admin = AsyncRedis.from_url(own_redis_url)
        try:
            await until([True])
            for _ in range(2):
                await admin.client_pause(60_000, all=False)  # CLIENT PAUSE 60000 WRITE
                await until([False] * 3)
                await admin.client_unpause()
                await until([True])
        finally:
            await admin.aclose()

    with_gate(own_redis_url, body, backend_timeout=0.2)
    warnings = [record.getMessage() for record in caplog.records if "could not refresh" in record.getMessage()]
    assert len(warnings) == 2, warnings

"""Heartbeats and the catalogue as stored: what a worker says, read back whatever was stored."""

from __future__ import annotations

import pytest
from redis import Redis

from taskgate.records import keys
from taskgate.records.workers import (
    CATALOGUE_FRESH,
    CatalogueEntry,
    Heartbeat,
    StoredEntry,
    encode_entry,
    missing_tasks,
    parse_entry,
    parse_heartbeat,
    parse_stored,
    read_catalogue,
    stale_names,
    withdrawals,
)


def test_a_heartbeat_reads_back_what_it_stored() -> None:
    beat = Heartbeat(("tag-1",), ("celery", "slowlane"), ("taskgate.add",), 1795560962.5)
    assert parse_heartbeat(beat.encode()) == beat


@pytest.mark.parametrize("stored", [b"{not json", b"[1, 2]", b'{"tags": "one", "queues": 3, "at": "soon"}'])
def test_an_unreadable_heartbeat_holds_nothing(stored: bytes) -> None:
    assert parse_heartbeat(stored) == Heartbeat()


def test_missing_tasks_are_those_of_the_queues_a_worker_consumes() -> None:
    catalogue = {"taskgate.add": CatalogueEntry(module="taskgate.tasks", queue="celery"),
                 "taskgate.lane": CatalogueEntry(module="tests.sample_tasks", queue="slowlane"),
                 "taskgate.other": CatalogueEntry(module="elsewhere", queue="elsewhere")}
    beat = Heartbeat(queues=("celery", "slowlane"), tasks=("taskgate.add",))
    assert missing_tasks(beat, catalogue) == {"taskgate.lane": catalogue["taskgate.lane"]}


@pytest.mark.parametrize(("stored", "entry"), [
    (b'{"module": "m", "queue": "q"}', CatalogueEntry(module="m", queue="q")),
    (b'{"module": 1, "queue": "q"}', None), (b"nope", None), (None, None),
])
def test_catalogue_entries_parse_or_read_as_absent(stored: bytes | None, entry: CatalogueEntry | None) -> None:
    assert parse_entry(stored) == entry


def test_a_catalogue_entry_reads_back_with_when_and_by_whom_it_was_published() -> None:
    entry = CatalogueEntry(module="myapp.tasks", queue="celery")
    stored = encode_entry(entry, 1795560962.5, "host:12:ab")
    assert parse_entry(stored) == entry
    assert parse_stored(stored) == StoredEntry(entry, 1795560962.5, "host:12:ab")
    assert parse_stored(encode_entry(entry, 1.0, "h", withdrawn=True)) == StoredEntry(entry, 1.0, "h", withdrawn=True)


@pytest.mark.parametrize("stored", [b'{"module": "m", "queue": "q"}',
                                    b'{"module": "m", "queue": "q", "published_at": "soon", "by": 7, "withdrawn": 1}',
                                    b'{"module": "m", "queue": "q", "published_at": true, "by": null, "withdrawn": "yes"}'])
def test_an_entry_that_does_not_say_when_or_by_whom_reads_as_not_said(stored: bytes) -> None:
    assert parse_stored(stored) == StoredEntry(CatalogueEntry(module="m", queue="q"))


#: What a catalogue holds at NOW: entries a running API republished, one no API republished
#: within the window, one an earlier version wrote (no published_at), and values that do not parse.
NOW = 1_500_000_000.0  # 2017: long before any clock this runs on
STORED = {
    b"taskgate.fresh": b'{"module": "app.fresh", "queue": "q", "published_at": %d, "by": "a"}' % (NOW - 5),
    b"taskgate.edge": b'{"module": "app.edge", "queue": "q", "published_at": %d}' % (NOW - CATALOGUE_FRESH),
    b"taskgate.stale": b'{"module": "app.gone", "queue": "q", "published_at": %d, "by": "a"}' % (
        NOW - CATALOGUE_FRESH - 1),
    b"taskgate.withdrawn": b'{"module": "app.closed", "queue": "q", "published_at": %d, "by": "b", "withdrawn": true}' % (
        NOW - 5),
    b"taskgate.legacy": b'{"module": "app.old", "queue": "q"}',
    b"taskgate.odd_time": b'{"module": "app.odd", "queue": "q", "published_at": "yesterday"}',
    b"taskgate.broken": b"{not json",
    b"taskgate.list": b"[1, 2]",
}


def test_reading_the_catalogue_keeps_only_what_running_apis_republished(own_redis_url: str) -> None:
    client = Redis.from_url(own_redis_url)
    try:
        client.hset(keys.CATALOGUE, mapping=STORED)  # type: ignore[arg-type]
        assert read_catalogue(client, now=NOW) == {
            "taskgate.fresh": CatalogueEntry(module="app.fresh", queue="q"),
            "taskgate.edge": CatalogueEntry(module="app.edge", queue="q")}
        # the worker's use (naming the module of a task it lacks) takes any readable entry
        assert {name.decode() for name, raw in STORED.items() if parse_entry(raw) is not None} == {
            "taskgate.fresh", "taskgate.edge", "taskgate.stale", "taskgate.withdrawn", "taskgate.legacy",
            "taskgate.odd_time"}
        # without ``now``, this clock's: every entry above was published years ago
        assert read_catalogue(client) == {}
    finally:
        client.close()


def test_stale_names_are_those_published_before_the_window_only() -> None:
    """An entry that does not say when (an earlier version's API may still run) or does not
    parse is never pruned: only one known to be older than the window."""
    assert stale_names(STORED, NOW) == [b"taskgate.stale"]


def test_withdrawals_are_the_entries_one_taskgate_published_last_marked_withdrawn() -> None:
    """Those entries say ``by`` it (and are not withdrawn yet); "" (what an entry that does not
    say reads as) names none."""
    withdrawn = withdrawals(STORED, "a")
    assert {name: parse_stored(raw) for name, raw in withdrawn.items()} == {
        b"taskgate.fresh": StoredEntry(CatalogueEntry(module="app.fresh", queue="q"), NOW - 5, "a", withdrawn=True),
        b"taskgate.stale": StoredEntry(CatalogueEntry(module="app.gone", queue="q"), NOW - CATALOGUE_FRESH - 1, "a",
                                       withdrawn=True)}
    assert withdrawals(STORED, "b") == {}
    assert withdrawals(STORED, "") == {}

"""Heartbeats and the catalogue as stored: what a worker says, read back whatever was stored."""

from __future__ import annotations

import pytest

from taskgate.records.workers import CatalogueEntry, Heartbeat, missing_tasks, parse_entry, parse_heartbeat


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

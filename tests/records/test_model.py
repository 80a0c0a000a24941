"""The record's one codec: stored forms in, typed values out, and never an exception."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from taskgate.records import TaskRecord, decode, decode_event, encode, stamp
from taskgate.states import TaskState


def test_times_read_in_both_stored_forms() -> None:
    """Milliseconds as written now; float seconds as records of earlier versions hold them."""
    record = decode("t", {b"created_at": str(stamp(1795560962.5)).encode(), b"started_at": b"1795560962.25"})
    assert record.created_at == datetime.fromtimestamp(1795560962.5, tz=UTC)
    assert record.started_at == datetime.fromtimestamp(1795560962.25, tz=UTC)


def test_a_full_record_decodes_to_types() -> None:
    record = decode("t", {b"name": b"add", b"state": b"succeeded", b"owner": b"ann", b"attempts": b"2",
                          b"seq": b"7", b"result": b"[1, 2]", b"error": b'{"type": "X"}', b"cancel": b"1",
                          b"message": b"internal", b"queue": b"internal", b"unknown_field": b"x"})
    assert record == TaskRecord(task_id="t", name="add", state=TaskState.SUCCEEDED, owner="ann", attempts=2,
                                seq=7, result=[1, 2], error={"type": "X"}, cancel=True)
    assert record.ended


@pytest.mark.parametrize(("field", "stored"), [
    ("finished_at", b"253402347599000"), ("started_at", b"soon"), ("created_at", b"inf"),
    ("progress", b"{not json"), ("attempts", b"many"), ("state", b"exploded"),
    ("cancel_requested_at", b"when asked"), ("waiting_for", b"godot"),
])
def test_an_unreadable_field_reads_as_absent(field: str, stored: bytes) -> None:
    record = decode("t", {b"name": b"add", field.encode(): stored})
    assert record.unreadable == {field}
    assert getattr(record, field) in (None, 0)
    assert record.name == "add"


def test_why_a_run_waits_reads_as_one_of_its_reasons() -> None:
    for reason in ("rate", "slot", "turn"):
        assert decode("t", {b"state": b"queued", b"waiting_for": reason.encode()}).waiting_for == reason
    assert decode("t", {b"state": b"queued"}).waiting_for is None


def test_events_decode_like_hashes_and_order_by_sequence() -> None:
    older = decode_event("t", b'{"state": "started", "seq": "2", "started_at": "1795560962000"}')
    newer = decode("t", {b"state": b"succeeded", b"seq": b"3"})
    assert older.state is TaskState.STARTED and older.started_at is not None
    assert newer.newer_than(older) and not older.newer_than(newer) and older.newer_than(None)


def test_encode_gives_stored_forms() -> None:
    when = datetime(2026, 11, 25, tzinfo=UTC)
    assert encode(state=TaskState.FAILED, finished_at=when, next_attempt_at=1.5, error={"type": "X"},
                  worker="w", attempts=3) == {
        "state": "failed", "finished_at": stamp(when.timestamp()), "next_attempt_at": 1500,
        "error": b'{"type":"X"}', "worker": "w", "attempts": 3}
    with pytest.raises(TypeError):
        encode(worker=object())


def test_a_timeline_keeps_the_entries_that_fit() -> None:
    stored = (b'[{"state": "queued", "at": 1700000000250, "attempt": 0}, {"state": "nope", "at": 1},'
              b' {"state": "started", "at": 1e300}, "junk", {"state": "started", "at": 1700000001000,'
              b' "attempt": 1, "worker": "w1"}]')
    record = decode("t", {b"timeline": stored})
    assert [(change.state, change.attempt, change.worker) for change in record.timeline] == [
        (TaskState.QUEUED, 0, None), (TaskState.STARTED, 1, "w1")]
    assert record.timeline[0].at == datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)
    assert decode("t", {b"timeline": b"{}"}).timeline == ()
    assert decode("t", {b"timeline": b"not json"}).unreadable == {"timeline"}

"""When schedules fire (``taskgate.schedule``), with the clock passed in: cron in a time zone
across both daylight-saving changes, ``every`` from its anchor, catch-up's last missed tick,
and the definitions refused with a message naming what to fix."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

import taskgate
from taskgate.exceptions import InvalidArguments
from taskgate.schedule import Timing

BERLIN = ZoneInfo("Europe/Berlin")


def at(year: int, month: int, day: int, hour: int, minute: int, zone: ZoneInfo = BERLIN) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=zone).timestamp()


def utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M")


def ticks(timing: Timing, start: float, count: int) -> list[str]:
    out, when = [], start
    for _ in range(count):
        when = timing.next_after(when, start)
        out.append(utc(when))
    return out


def test_cron_at_a_fixed_time_fires_once_on_both_dst_days() -> None:
    nightly = taskgate.cron("30 2 * * *", timezone="Europe/Berlin")
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:30 never happens: it fires at the jump
    assert ticks(nightly, at(2026, 3, 28, 12, 0), 3) == [
        "2026-03-29 01:00", "2026-03-30 00:30", "2026-03-31 00:30"]
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET, so 02:30 happens twice: it fires once
    assert ticks(nightly, at(2026, 10, 24, 12, 0), 3) == [
        "2026-10-25 00:30", "2026-10-26 01:30", "2026-10-27 01:30"]


def test_cron_with_a_wildcard_hour_keeps_real_intervals_through_fall_back() -> None:
    half_hourly = taskgate.cron("*/30 * * * *", timezone="Europe/Berlin")
    # from 01:00 CEST (23:00 UTC) on: the repeated hour is run through, every 30 real minutes
    assert ticks(half_hourly, at(2026, 10, 25, 1, 0), 6) == [
        "2026-10-24 23:30", "2026-10-25 00:00", "2026-10-25 00:30", "2026-10-25 01:00",
        "2026-10-25 01:30", "2026-10-25 02:00"]


def test_cron_in_utc_and_the_next_tick_is_strictly_after() -> None:
    five = taskgate.cron("*/5 * * * *")
    on_a_tick = at(2026, 1, 1, 10, 5, ZoneInfo("UTC"))
    assert utc(five.next_after(on_a_tick, on_a_tick)) == "2026-01-01 10:10"
    assert utc(five.next_after(on_a_tick - 0.5, on_a_tick)) == "2026-01-01 10:05"


def test_every_steps_from_its_anchor() -> None:
    thirty = taskgate.every(seconds=30)
    anchor = 1_000_000.0
    assert thirty.next_after(anchor - 100, anchor) == anchor + 30, "the first tick is one interval in"
    assert thirty.next_after(anchor, anchor) == anchor + 30
    assert thirty.next_after(anchor + 29.9, anchor) == anchor + 30
    assert thirty.next_after(anchor + 30, anchor) == anchor + 60
    assert taskgate.every(minutes=5, hours=1).every == 3900


def test_the_last_missed_tick_for_catchup_one() -> None:
    thirty = taskgate.every(seconds=30, catchup="one")
    anchor = 1_000_000.0
    assert thirty.last_at_or_before(anchor + 95, anchor, since=anchor + 29) == anchor + 90
    assert thirty.last_at_or_before(anchor + 95, anchor, since=anchor + 90) is None
    hourly = taskgate.cron("0 * * * *", catchup="one")
    since = at(2026, 1, 1, 10, 0, ZoneInfo("UTC"))
    assert utc(hourly.last_at_or_before(since + 3 * 3600 + 60, since, since - 1)) == "2026-01-01 13:00"  # type: ignore[arg-type]


@pytest.mark.parametrize(("make", "says"), [
    (lambda: taskgate.cron("61 * * * *"), "cron: '61 * * * *' is not valid"),
    (lambda: taskgate.cron("* * *"), "five fields"),
    (lambda: taskgate.cron("0 0 31 2 *"), "is not valid"),
    (lambda: taskgate.cron("0 3 * * *", timezone="Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
    (lambda: taskgate.cron("0 3 * * *", timezone="../../etc/passwd"), "unknown time zone"),
    (lambda: taskgate.every(seconds=0.5), "every: 0.5 seconds is out of range"),
    (lambda: taskgate.every(days=400), "out of range"),
    (lambda: Timing(), "give either cron or every"),
    (lambda: Timing(cron="* * * * *", every=5), "give either cron or every"),
    (lambda: taskgate.every(5, overlap="never"), "overlap: 'never'"),  # type: ignore[arg-type]
    (lambda: taskgate.every(5, catchup="all"), "catchup: 'all'"),  # type: ignore[arg-type]
])
def test_bad_definitions_say_what_to_fix(make: object, says: str) -> None:
    with pytest.raises(InvalidArguments, match=None) as caught:
        make()  # type: ignore[operator]
    assert says in str(caught.value)


@pytest.mark.parametrize("seconds", [1.1, 2.7, 4.2, 30.3, 86400.7, 1.0004])
def test_a_fractional_every_always_moves_on_from_a_stored_tick(seconds: float) -> None:
    """Ticks are stored as whole milliseconds: stepping from one read back must give the next
    tick, never the same one again (which would fire it twice)."""
    timing = taskgate.every(seconds)
    rng = random.Random(seconds)
    for _ in range(500):
        anchor = rng.uniform(1e9, 2e9)
        score = round(anchor * 1000)
        for _ in range(5):
            following = round(timing.next_after(score / 1000, anchor) * 1000)
            assert following - score in (round(seconds * 1000) - 1, round(seconds * 1000), round(seconds * 1000) + 1)
            score = following

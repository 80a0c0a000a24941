"""When a schedule fires: ``taskgate.cron(...)`` and ``taskgate.every(...)``, pure functions of
the time they are asked about (the clock is always passed in, never read here).

Cron expressions are read and stepped by cronsim (Healthchecks.io's, no dependencies), in the
schedule's IANA time zone. Across a daylight-saving change a fixed-time schedule fires once:
on the spring-forward day a time that does not exist (``30 2 * * *`` in Europe/Berlin) fires
when the clock jumps (03:00 CEST); on the fall-back day a time that occurs twice fires at its
first occurrence only. Schedules with a wildcard hour (``*/30 * * * *``) keep firing every 30
real minutes through both changes. ``every`` schedules step in plain seconds from their anchor
(the time they were created), so time zones do not touch them.
"""

from __future__ import annotations

import functools
import math
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cronsim import CronSim, CronSimError

from .exceptions import InvalidArguments

#: What a run does while the previous one has not finished: run anyway, or skip this tick.
Overlap = Literal["allow", "skip"]
#: What a schedule does about ticks missed while no worker ran: fire none, or fire once.
Catchup = Literal["none", "one"]

#: ``every`` bounds, in seconds: one second to one year.
MIN_EVERY = 1.0
MAX_EVERY = 366 * 86_400.0


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name``, or :class:`InvalidArguments` naming it."""
    if name != "UTC" and name not in _zones():
        raise InvalidArguments(f"timezone: unknown time zone {name!r}; use an IANA name such as "
                               "'UTC' or 'Europe/Berlin'")
    return zoneinfo.ZoneInfo(name)


def check_cron(expression: str) -> str:
    """``expression`` if it is a valid five-field cron expression, else :class:`InvalidArguments`."""
    if not isinstance(expression, str) or len(expression.split()) != 5:
        raise InvalidArguments(f"cron: {expression!r} is not a cron expression of five fields "
                               "(minute hour day-of-month month day-of-week), e.g. '*/5 * * * *'")
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise InvalidArguments(f"cron: {expression!r} is not valid: {exc}") from None
    return expression


def check_every(seconds: float) -> float:
    """``seconds`` if it is a usable interval, else :class:`InvalidArguments`."""
    if not isinstance(seconds, int | float) or not MIN_EVERY <= seconds <= MAX_EVERY:
        raise InvalidArguments(f"every: {seconds!r} seconds is out of range; give {MIN_EVERY:g} to "
                               f"{MAX_EVERY:g} seconds (one year)")
    return float(seconds)


def _ms_floor(seconds: float) -> int:
    """The whole millisecond at or before ``seconds`` (a stored tick, divided by 1000 and read
    back, lands on its own millisecond despite float error)."""
    return math.floor(seconds * 1000 + 0.0005)


@dataclass(frozen=True, slots=True)
class Timing:
    """When a schedule fires: exactly one of ``cron`` (with ``timezone``) or ``every`` (seconds),
    and what it does about overlapping runs and missed ticks. A declared schedule also carries
    the arguments of the task it runs (``arguments``)."""

    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    arguments: dict[str, Any] = field(default_factory=dict)
    overlap: Overlap = "allow"
    catchup: Catchup = "none"
    enabled: bool = True

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise InvalidArguments("give either cron or every (seconds), not both or neither")
        if self.cron is not None:
            check_cron(self.cron)
            zone(self.timezone)
        if self.every is not None:
            object.__setattr__(self, "every", check_every(self.every))
        if self.overlap not in ("allow", "skip"):
            raise InvalidArguments(f"overlap: {self.overlap!r} is not 'allow' or 'skip'")
        if self.catchup not in ("none", "one"):
            raise InvalidArguments(f"catchup: {self.catchup!r} is not 'none' or 'one'")

    def next_after(self, after: float, anchor: float) -> float:
        """The first tick strictly after ``after`` (epoch seconds); ``anchor``: when an ``every``
        schedule was made (its ticks fall one interval after it, then every interval after
        that). Ticks fall on whole milliseconds,
        as schedules store them, so stepping from a stored tick always moves on."""
        if self.every is not None:
            step, start, at = round(self.every * 1000), round(anchor * 1000), _ms_floor(after)
            return (start + max(1, (at - start) // step + 1) * step) / 1000  # the first: one step in
        assert self.cron is not None
        local = datetime.fromtimestamp(after, tz=zone(self.timezone))
        # cronsim steps from the start of the next minute: ``after`` itself is never returned
        return next(CronSim(self.cron, local)).timestamp()

    def last_at_or_before(self, when: float, anchor: float, since: float) -> float | None:
        """The latest tick in ``(since, when]``, or None (for catch-up ``one``)."""
        if self.every is not None:
            step, start, at = round(self.every * 1000), round(anchor * 1000), _ms_floor(when)
            if at - start < step:
                return None
            tick = (start + (at - start) // step * step) / 1000
        else:
            assert self.cron is not None
            # cronsim's reverse steps go to the latest tick strictly before its start
            local = datetime.fromtimestamp(when + 0.001, tz=zone(self.timezone))
            tick = next(CronSim(self.cron, local, reverse=True)).timestamp()
        return tick if tick > since else None

    def describe(self) -> str:
        """``cron '0 3 * * *' (Europe/Berlin)`` or ``every 30 s``."""
        if self.cron is not None:
            return f"cron {self.cron!r} ({self.timezone})"
        return f"every {self.every:g} s"


def cron(expression: str, *, timezone: str = "UTC", arguments: dict[str, Any] | None = None,
         overlap: Overlap = "allow", catchup: Catchup = "none") -> Timing:
    """A schedule firing at the times of a five-field cron ``expression`` in ``timezone`` (an
    IANA name), with the task's ``arguments``. For ``@taskgate.task(schedule=...)``."""
    return Timing(cron=expression, timezone=timezone, arguments=dict(arguments or {}),
                  overlap=overlap, catchup=catchup)


def every(seconds: float = 0, *, minutes: float = 0, hours: float = 0, days: float = 0,
          arguments: dict[str, Any] | None = None, overlap: Overlap = "allow",
          catchup: Catchup = "none") -> Timing:
    """A schedule firing every so long (the sum of the parts given), from when it is created,
    with the task's ``arguments``. For ``@taskgate.task(schedule=...)``."""
    total = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days).total_seconds()
    return Timing(every=total, arguments=dict(arguments or {}), overlap=overlap, catchup=catchup)

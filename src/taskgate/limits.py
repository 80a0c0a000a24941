"""Admission limits declared with a task: a rate limit, a concurrency limit, a default expiry.

``@taskgate.task(rate_limit="100/m", rate_key="owner", burst=5,
concurrency=taskgate.Concurrency(limit=2, key="customer"), expires=600)`` is checked here when
the task is declared (``TypeError``/``ValueError`` naming the task and the problem) and kept on
its :class:`~taskgate.registry.TaskSpec` as :class:`RateLimit`, :class:`Concurrency` and
seconds. The dispatcher reads a spec through :func:`declared_json` (the declared limits, as the
admission script takes them) and :func:`lane_of` (which rate and concurrency key one run falls
under). :func:`parse_rate` also reads the rate of a runtime override (``PUT /limits/{task}``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeGuard

import orjson
from pydantic import BaseModel

if TYPE_CHECKING:
    from .config import Settings
    from .registry import TaskSpec

#: Seconds in each period a rate may be given per.
PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: Most runs a rate may allow per period, and most runs a burst may start at once.
MAX_COUNT = 1_000_000
#: Longest default expiry, in seconds (30 days, as the longest countdown).
MAX_EXPIRES = 30 * 86_400
#: Keys naming no argument: one bucket for the whole task, or one per owner.
TASK, OWNER = "task", "owner"
#: A key value longer than this (in characters) is replaced by its SHA-256 (hex).
MAX_KEY_CHARS = 200
#: Largest weight of a concurrency key (or of an owner in fair queueing), and most keys weighted.
MAX_WEIGHT, MAX_WEIGHTS = 1000, 1000

_RATE = re.compile(r"([^/]*)/([^/]*)")
_SHAPE = "is not '<count>/<s|m|h>' (e.g. \"100/m\")"


def _positive_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_COUNT


def check_weights(weights: object, what: str) -> dict[str, int]:
    """``weights`` (a mapping of key value to weight) as a dict, checked: at most 1,000 keys,
    each a string of at most 200 characters (the owner, or an argument's value as the lane names
    it: a string as is, anything else as its JSON text), each weight a whole number from 1 to
    1,000. ``TypeError``/``ValueError`` starting with ``what`` otherwise."""
    if not isinstance(weights, Mapping):
        raise TypeError(f"{what} {weights!r} must be a mapping of key value (str) to weight (int), "
                        "e.g. {\"acme\": 3}")
    if len(weights) > MAX_WEIGHTS:
        raise ValueError(f"{what}: {len(weights)} keys, at most {MAX_WEIGHTS:,} may be weighted")
    checked: dict[str, int] = {}
    for key, weight in weights.items():
        if not isinstance(key, str):
            raise TypeError(f"{what}: key {key!r} must be a string (the key's value: an owner, or an "
                            "argument's value as text)")
        if len(key) > MAX_KEY_CHARS:
            raise ValueError(f"{what}: key {key[:20]!r}... is over {MAX_KEY_CHARS} characters")
        if isinstance(weight, bool) or not isinstance(weight, int):
            raise TypeError(f"{what}: weight {weight!r} of {key!r} must be a whole number from 1 to "
                            f"{MAX_WEIGHT:,}")
        if not 1 <= weight <= MAX_WEIGHT:
            raise ValueError(f"{what}: weight {weight!r} of {key!r} must be a whole number from 1 to "
                             f"{MAX_WEIGHT:,}")
        checked[key] = weight
    return checked


@dataclass(frozen=True)
class Concurrency:
    """At most ``limit`` runs of the task with the same ``key`` at once, across the cluster;
    between keys, turns go round-robin. ``key``: ``"task"`` (one limit for the whole task),
    ``"owner"`` (one per owner), or the name of one of the task's arguments (one per value of
    it; checked against the signature when the task is declared). ``limit`` is 1 to 1,000,000.

    ``weights`` (optional, not with ``key="task"``): key value -> a whole number from 1 to 1,000
    (at most 1,000 keys): a key of weight w may run ``limit * w`` at once, so it gets w times the
    share of a key not listed (weight 1) when they compete for workers. A key value is the owner,
    or an argument's value (a string as is, anything else as its JSON text, e.g. ``"42"``)."""

    limit: int
    key: str = TASK
    weights: Mapping[str, int] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not _positive_int(self.limit):
            raise ValueError(f"Concurrency(limit={self.limit!r}): limit must be a whole number from 1 to "
                             f"{MAX_COUNT:,}")
        if not isinstance(self.key, str) or not self.key:
            raise TypeError(f"Concurrency(key={self.key!r}): key must be \"task\", \"owner\" or the name of "
                            "one of the task's arguments")
        if self.weights is not None:
            if self.key == TASK:
                raise ValueError("Concurrency(weights=...): weights need a key (\"owner\" or an argument's "
                                 "name); with key=\"task\" the task has one key, nothing to weigh")
            # a read-only copy: the value stays as declared
            object.__setattr__(self, "weights", MappingProxyType(check_weights(self.weights,
                                                                               "Concurrency(weights=...)")))


@dataclass(frozen=True)
class RateLimit:
    """Runs of the task may start at ``count`` per ``period`` seconds, spread evenly (one every
    :attr:`interval`), with up to ``burst`` starting at once after a quiet spell (1: strictly
    spaced); one such budget per value of ``key`` (``"task"``, ``"owner"`` or an argument's name,
    as for :class:`Concurrency`)."""

    count: int
    period: float
    burst: int = 1
    key: str = TASK

    def __post_init__(self) -> None:
        if not _positive_int(self.count):
            raise ValueError(f"RateLimit(count={self.count!r}): count must be a whole number from 1 to "
                             f"{MAX_COUNT:,}")
        if not isinstance(self.period, int | float) or not math.isfinite(self.period) or self.period <= 0:
            raise ValueError(f"RateLimit(period={self.period!r}): period must be a finite number of seconds "
                             "above 0")
        if not _positive_int(self.burst):
            raise ValueError(f"RateLimit(burst={self.burst!r}): burst must be a whole number from 1 to "
                             f"{MAX_COUNT:,}")

    @property
    def interval(self) -> float:
        """Seconds between two runs' starts at the steady rate (``period / count``)."""
        return self.period / self.count


def parse_rate(text: object, what: str = "rate limit") -> tuple[int, float]:
    """``"<count>/<s|m|h>"`` as (count, period in seconds): ``"100/m"`` is (100, 60.0). The count
    is a whole number from 1 to 1,000,000. Raises ``ValueError`` (``TypeError`` for a non-string)
    saying what is wrong, starting with ``what`` and the text."""
    if not isinstance(text, str):
        raise TypeError(f"{what} {text!r} {_SHAPE}: give a string")
    shape = _RATE.fullmatch(text)
    if shape is None:
        raise ValueError(f"{what} {text!r} {_SHAPE}")
    count, unit = shape.groups()
    if unit not in PERIODS:
        raise ValueError(f"{what} {text!r}: the period {unit!r} is not one of s, m, h (per second, minute, "
                         "hour)")
    if not re.fullmatch(r"[0-9]+", count):
        raise ValueError(f"{what} {text!r}: the count {count!r} is not a positive whole number; write "
                         "'<count>/<s|m|h>' (e.g. \"100/m\")")
    if len(count) > 12 or not 1 <= int(count) <= MAX_COUNT:
        raise ValueError(f"{what} {text!r}: the count must be from 1 to {MAX_COUNT:,}")
    return int(count), PERIODS[unit]


def check_key(task: str, what: str, key: object, arguments: Collection[str]) -> str:
    """``key`` if it can key a limit of the task ``task`` (whose arguments are ``arguments``):
    ``"task"``, ``"owner"`` or one of the arguments' names (``"task"`` and ``"owner"`` mean the
    task and the owner even when an argument has that name); ``what`` names the option in the
    message of the ``TypeError``/``ValueError`` raised otherwise."""
    if not isinstance(key, str):
        raise TypeError(f"task {task!r}: {what} {key!r} must be a string: \"task\", \"owner\" or an "
                        "argument's name")
    if key not in (TASK, OWNER) and key not in arguments:
        names = ", ".join(repr(name) for name in arguments) or "none"
        raise ValueError(f"task {task!r}: {what} {key!r} is not \"task\", \"owner\" or one of the task's "
                         f"arguments ({names})")
    return key


def rate_of(task: str, arguments: Collection[str], rate_limit: object, rate_key: object,
            burst: object) -> RateLimit | None:
    """The declared rate limit of the task ``task`` (None without ``rate_limit``), checked."""
    if rate_limit is None:
        for option, value in (("rate_key", rate_key), ("burst", burst)):
            if value is not None:
                raise ValueError(f"task {task!r}: {option} is given without rate_limit; give rate_limit "
                                 f"(e.g. rate_limit=\"100/m\") or drop {option}")
        return None
    count, period = parse_rate(rate_limit, f"task {task!r}: rate_limit")
    if burst is None:
        runs = 1
    elif _positive_int(burst):
        runs = burst
    else:
        raise (TypeError if not isinstance(burst, int) or isinstance(burst, bool) else ValueError)(
            f"task {task!r}: burst {burst!r} must be a whole number from 1 to {MAX_COUNT:,} (runs that may "
            "start at once)")
    key = check_key(task, "rate_key", TASK if rate_key is None else rate_key, arguments)
    return RateLimit(count=count, period=period, burst=runs, key=key)


def concurrency_of(task: str, arguments: Collection[str], concurrency: object) -> Concurrency | None:
    """The declared concurrency limit of the task ``task``, its key checked against its arguments."""
    if concurrency is None:
        return None
    if not isinstance(concurrency, Concurrency):
        raise TypeError(f"task {task!r}: concurrency {concurrency!r} must be "
                        "taskgate.Concurrency(limit=..., key=...)")
    check_key(task, "concurrency key", concurrency.key, arguments)
    return concurrency


def expiry_seconds(value: object, what: str = "expires") -> float:
    """``value`` (seconds, or a ``timedelta``) as seconds: finite, above 0 and at most 30 days
    (2592000 s); ``TypeError``/``ValueError`` starting with ``what`` otherwise."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(f"{what} {value!r} must be seconds (a number) or a datetime.timedelta")
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_EXPIRES:
        raise ValueError(f"{what} {value!r} must be more than 0 and at most {MAX_EXPIRES} seconds (30 days)")
    return seconds


def declared_json(spec: TaskSpec) -> str:
    """The task's declared limits as the admission script takes them: compact JSON
    ``{"rate": [count, period_ms, burst], "concurrency": limit, "weights": {key value: w}}``
    without the parts not declared; '' for a task with neither a rate nor a concurrency limit."""
    declared: dict[str, Any] = {}
    if spec.rate is not None:
        declared["rate"] = [spec.rate.count, round(spec.rate.period * 1000), spec.rate.burst]
    if spec.concurrency is not None:
        declared["concurrency"] = spec.concurrency.limit
        if spec.concurrency.weights is not None:
            declared["weights"] = dict(spec.concurrency.weights)
    return orjson.dumps(declared).decode() if declared else ""


def lane_of(spec: TaskSpec, owner: str, kwargs: dict[str, Any]) -> str:
    """Which rate bucket and concurrency key one run of the task falls under: the compact JSON
    array ``[rate key value, concurrency key value]``, each "" for a key ``"task"`` or an
    absent limit, the owner for ``"owner"``, and for an argument its value (a string as is,
    anything else as its JSON text with sorted keys; an argument not given takes its default);
    a value over 200 characters is replaced by its SHA-256 (64 hex digits)."""
    rate = _key_value(spec, spec.rate.key, owner, kwargs) if spec.rate is not None else ""
    slot = _key_value(spec, spec.concurrency.key, owner, kwargs) if spec.concurrency is not None else ""
    return orjson.dumps([rate, slot]).decode()


def _key_value(spec: TaskSpec, key: str, owner: str, kwargs: dict[str, Any]) -> str:
    if key == TASK:
        return ""
    if key == OWNER:
        value: Any = owner
    elif key in kwargs:
        value = kwargs[key]
    else:
        value = spec.args_model.model_fields[key].get_default(call_default_factory=True)
    text = value if isinstance(value, str) else orjson.dumps(
        value, default=_json_default, option=orjson.OPT_SORT_KEYS).decode()
    if len(text) > MAX_KEY_CHARS:
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


def _json_default(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} cannot key a limit")


def publish(pipe: Any, catalogue: Collection[TaskSpec]) -> None:
    """Queue on ``pipe`` (a Redis pipeline, blocking or asyncio) what every API and worker
    tells the admission scripts at start: the limits each task of ``catalogue`` declares (and
    that those declaring none have none)."""
    from .records import keys

    for spec in catalogue:
        declared = declared_json(spec)
        if declared:
            pipe.hset(keys.LIMITS_DECLARED, spec.name, declared)
        else:
            pipe.hdel(keys.LIMITS_DECLARED, spec.name)


def publish_fair(pipe: Any, settings: Settings) -> None:
    """Queue on ``pipe`` what a starting worker tells the admission scripts of fair queueing by
    owner: its window (``TASKGATE_FAIR_BY=owner``) and the owners' weights
    (``TASKGATE_FAIR_WEIGHTS``, replacing any stored before), or that it is off. Workers own the
    setting (an app that only submits leaves it as they set it)."""
    from .brokers import parks_delays
    from .records import keys

    pipe.delete(keys.FAIR_WEIGHTS)
    if settings.fair_by == "owner" and parks_delays(settings):
        pipe.set(keys.FAIR, settings.fair_window)
        if settings.fair_weights:
            pipe.hset(keys.FAIR_WEIGHTS, mapping=settings.fair_weights)
    else:
        pipe.delete(keys.FAIR)

"""Admission limits as an admin sees and changes them (``GET``/``PUT``/``DELETE /limits``).

A task's limits are the ones its declaration gives (published by every API and worker in
:data:`~taskgate.records.keys.LIMITS_DECLARED`), each part replaced by a runtime override
(:data:`~taskgate.records.keys.LIMITS_OVERRIDE`, JSON ``{"rate": [count, period ms, burst] |
false, "concurrency": n | false, "weights": {key value: w} | false}``, only the parts given;
``false``: no such limit), as
``admission.lua``'s ``limits_of`` reads them. Changing an override marks every lane of the task
(its rate and concurrency key pair with runs waiting) due in :data:`~taskgate.records.keys.ADMIT_DUE`
now, so a worker's keeper re-examines the waiting runs under the new limits within a pass.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from .. import validation
from ..exceptions import FieldError, NoOverride, UnknownTask
from ..limits import MAX_COUNT, PERIODS, TASK, check_weights, declared_json, parse_rate
from ..records import keys
from ..registry import TaskSpec
from .backend import Backend

#: Most keys (lanes and held concurrency keys) shown per task; the rest are counted.
MAX_KEYS = 100
_UNITS = {round(seconds * 1000): unit for unit, seconds in PERIODS.items()}
_PARTS = ("rate_limit", "burst", "concurrency", "weights")
#: A part of an override as GET /limits shows it.
Part = str | int | dict[str, int] | None


class LimitsChange(BaseModel):
    """A runtime override of a task's declared limits: each field given replaces the declared
    one (null: no such limit); a field left out keeps the declared value. It replaces any
    earlier override of the task as a whole."""

    model_config = ConfigDict(extra="forbid", strict=True)

    rate_limit: str | None = Field(default=None, description='Runs that may start per second, minute or '
                                   'hour: `"<count>/<s|m|h>"`, e.g. `"10/s"` (null: no rate limit).',
                                   examples=["10/s"])
    burst: int | None = Field(default=None, ge=1, le=MAX_COUNT, description="Runs that may start at once "
                              "after a quiet spell (null: 1); needs a rate limit, given or declared.")
    concurrency: int | None = Field(default=None, ge=1, le=MAX_COUNT, description="Most runs with the same "
                                    "concurrency key at once, across the cluster (null: no concurrency "
                                    "limit).")
    weights: dict[str, int] | None = Field(
        default=None, description="Weights of concurrency key values (the owner, or the key argument's "
        "value as text): a key of weight w may run concurrency × w at once, keys not listed concurrency; "
        "each 1 to 1000, at most 1000 keys. Needs the task to declare a concurrency key other than "
        "\"task\" (null: no weights, the declared ones dropped).", examples=[{"acme": 3}])

    @field_validator("rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_rate(value, "rate limit")
            except ValueError as exc:
                raise PydanticCustomError("rate_limit", str(exc)) from None
        return value

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        if value is not None:
            try:
                check_weights(value, "weights")
            except (TypeError, ValueError) as exc:
                raise PydanticCustomError("weights", str(exc)) from None
        return value


@dataclass(frozen=True, slots=True)
class LimitValues:
    """A set of limits: the rate (``"100/m"``) and its burst, the concurrency limit and the
    weights of its key values; None for each limit not set."""

    rate_limit: str | None = None
    burst: int | None = None
    concurrency: int | None = None
    weights: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """One lane of a task (its rate key and concurrency key values; ``""``: the task's whole
    budget) or one concurrency key holding slots: its running and waiting runs, and when a rate
    limit next lets one of its waiting runs go."""

    rate_key: str | None
    concurrency_key: str | None
    running: int
    waiting: int
    next_admission_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskLimits:
    """One task's limits: declared, overridden (the parts given, None without an override),
    in effect, and its keys in use (at most :data:`MAX_KEYS`; ``more_keys`` left out)."""

    task: str
    declared: LimitValues
    override: dict[str, Part] | None
    effective: LimitValues
    source: Literal["declared", "override"]
    keys: list[KeyUsage]
    more_keys: int = 0


def _values(stored: dict[str, Any]) -> dict[str, Part]:
    """Stored limits (``{"rate": [count, ms, burst] | false, "concurrency": n | false, "weights":
    {key value: w} | false}``) as the fields of :class:`LimitValues`, only the parts present."""
    out: dict[str, Part] = {}
    if "rate" in stored:
        rate = stored["rate"]
        if isinstance(rate, list) and len(rate) == 3 and all(isinstance(part, int | float) for part in rate):
            count, period, burst = (round(part) for part in rate)
            unit = _UNITS.get(period)
            out["rate_limit"] = f"{count}/{unit}" if unit else f"{count}/{period / 1000:g}s"
            out["burst"] = burst
        else:
            out["rate_limit"] = out["burst"] = None
    if "concurrency" in stored:
        concurrency = stored["concurrency"]
        out["concurrency"] = int(concurrency) if isinstance(concurrency, int) and concurrency > 0 else None
    if "weights" in stored:
        weights = stored["weights"]
        out["weights"] = {str(key): weight for key, weight in weights.items() if isinstance(weight, int)} \
            if isinstance(weights, dict) else None
    return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _loads(text: bytes | str | None) -> dict[str, Any]:
    with contextlib.suppress(orjson.JSONDecodeError):
        found = orjson.loads(text) if text else {}
        return found if isinstance(found, dict) else {}
    return {}


class AdmissionLimits:
    """Read every limited task's limits and keys; override a task's limits, or drop the override."""

    def __init__(self, backend: Backend, catalogue: dict[str, TaskSpec]) -> None:
        self.backend, self.catalogue = backend, catalogue

    async def tasks(self) -> list[TaskLimits]:
        """Every task with declared limits (published, or declared in this catalogue) or an
        override, by name."""
        redis = self.backend.redis
        async with self.backend.deadline():
            declared = await redis.hgetall(keys.LIMITS_DECLARED)
            overrides = await redis.hgetall(keys.LIMITS_OVERRIDE)
        stored = {_text(name): text for name, text in declared.items()}
        for name, spec in self.catalogue.items():
            if name not in stored and (text := declared_json(spec)):
                stored[name] = text.encode()
        found = {_text(name): text for name, text in overrides.items()}
        return [await self._read(name, stored.get(name), found.get(name))
                for name in sorted(set(stored) | set(found))]

    async def get(self, name: str) -> TaskLimits:
        """Task ``name``'s limits (it need not have any)."""
        redis = self.backend.redis
        async with self.backend.deadline():
            declared, override = await redis.hget(keys.LIMITS_DECLARED, name), await redis.hget(
                keys.LIMITS_OVERRIDE, name)
        spec = self.catalogue.get(name)
        if declared is None and spec is not None:
            declared = declared_json(spec).encode()
        return await self._read(name, declared, override)

    async def put(self, name: str, change: LimitsChange, at: tuple[str, ...] = ("body",)) -> TaskLimits:
        """Override task ``name``'s declared limits with ``change`` (its fields given), replacing any
        earlier override; ``UnknownTask`` unless the task is in this catalogue, ``InvalidArguments``
        (naming the fields under ``at``) for a change that cannot be a limit."""
        spec = self.catalogue.get(name)
        if spec is None:
            raise UnknownTask(name)
        given = change.model_fields_set
        if not given:
            raise validation.refusal([FieldError(at, "give at least one of rate_limit, burst, concurrency, "
                                                 "weights (DELETE /limits/{task} removes an override)",
                                                 "missing")])
        override: dict[str, Any] = {}
        if "rate_limit" in given or "burst" in given:
            declared = spec.rate
            if "rate_limit" in given and change.rate_limit is None:
                if change.burst is not None:
                    raise validation.refusal([FieldError((*at, "burst"), "a burst needs a rate limit: "
                                                         "rate_limit is null here", "burst_without_rate")])
                override["rate"] = False
            else:
                if change.rate_limit is not None:
                    count, period = parse_rate(change.rate_limit)
                elif declared is not None:
                    count, period = declared.count, declared.period
                else:
                    raise validation.refusal([FieldError((*at, "burst"), f"a burst needs a rate limit: task "
                                                         f"{name!r} declares none, so give rate_limit too",
                                                         "burst_without_rate")])
                burst = (change.burst or 1) if "burst" in given else (declared.burst if declared else 1)
                override["rate"] = [count, round(period * 1000), burst]
        if "concurrency" in given:
            override["concurrency"] = change.concurrency or False
        if "weights" in given:
            if change.weights is not None and (spec.concurrency is None or spec.concurrency.key == TASK):
                declares = "no concurrency limit" if spec.concurrency is None else 'Concurrency(key="task")'
                raise validation.refusal([FieldError(
                    (*at, "weights"), f"weights need a concurrency key: task {name!r} declares {declares} "
                    "(a key, the owner or an argument, is set where the task is declared)",
                    "weights_without_key")])
            override["weights"] = change.weights if change.weights is not None else False
        await self._store(name, orjson.dumps(override))
        return await self.get(name)

    async def delete(self, name: str) -> None:
        """Drop task ``name``'s override (its declared limits apply again); :class:`NoOverride`
        if it has none, :class:`UnknownTask` if it has none and is not in this catalogue."""
        if not await self._store(name, None):
            raise NoOverride(name) if name in self.catalogue else UnknownTask(name)

    async def _store(self, name: str, override: bytes | None) -> bool:
        """Write (or, for None, delete) the override and mark every lane of the task due now, in
        one transaction; whether anything was there to delete."""
        redis = self.backend.redis
        async with self.backend.deadline():
            lanes = [lane async for lane in redis.sscan_iter(keys.admission(name, "lanes"), count=500)]
            seconds, micros = await redis.time()
            now = seconds * 1000 + micros // 1000
            async with redis.pipeline(transaction=True) as pipe:
                if override is None:
                    pipe.hdel(keys.LIMITS_OVERRIDE, name)
                else:
                    pipe.hset(keys.LIMITS_OVERRIDE, name, override)
                for first in range(0, len(lanes), 500):
                    pipe.zadd(keys.ADMIT_DUE, {keys.due_member(name, lane.decode()): now
                                               for lane in lanes[first:first + 500]}, lt=True)
                done = await pipe.execute()
        return override is not None or bool(done[0])

    async def _read(self, name: str, declared: bytes | str | None,
                    override: bytes | str | None) -> TaskLimits:
        base = _values(_loads(declared))
        parts = _values(_loads(override)) if override is not None else None
        merged = {**base, **(parts or {})}
        usage, more = await self._keys(name, rated=merged.get("rate_limit") is not None)
        return TaskLimits(
            task=name, declared=LimitValues(**base),  # type: ignore[arg-type]
            override=parts, effective=LimitValues(**merged),  # type: ignore[arg-type]
            source="override" if parts is not None else "declared", keys=usage, more_keys=more)

    async def _keys(self, name: str, rated: bool) -> tuple[list[KeyUsage], int]:
        """The task's lanes with runs waiting and its concurrency keys holding slots; a lane's
        next admission only while a rate limit is in effect (``rated``): without one, its time in
        ADMIT_DUE is only when a keeper looks at it next."""
        redis = self.backend.redis
        async with self.backend.deadline():
            async with redis.pipeline(transaction=False) as pipe:
                pipe.scard(keys.admission(name, "lanes"))
                pipe.srandmember(keys.admission(name, "lanes"), MAX_KEYS)
                pipe.scard(keys.admission(name, "held"))
                pipe.srandmember(keys.admission(name, "held"), MAX_KEYS)
                lane_count, lanes, held_count, held = await pipe.execute()
            pairs: list[tuple[str | None, str, str | None]] = []  # rate key, concurrency key, lane
            for raw in lanes:
                with contextlib.suppress(orjson.JSONDecodeError):
                    pair = orjson.loads(raw)
                    if isinstance(pair, list) and len(pair) == 2:
                        pairs.append((str(pair[0]), str(pair[1]), raw.decode()))
            seen = {ck for _, ck, _ in pairs}
            pairs += [(None, ck, None) for raw in held if (ck := raw.decode()) not in seen]
            more = (max(0, lane_count - len(lanes)) + max(0, held_count - len(held))
                    + max(0, len(pairs) - MAX_KEYS))
            pairs = pairs[:MAX_KEYS]
            async with redis.pipeline(transaction=False) as pipe:
                for _, ck, lane in pairs:
                    pipe.zcard(keys.admission(name, "slots", ck))
                    pipe.llen(keys.admission(name, "wait", lane or ""))
                    pipe.zscore(keys.ADMIT_DUE, keys.due_member(name, lane or ""))
                counts = await pipe.execute()
        usage = []
        for index, (rk, ck, lane) in enumerate(pairs):
            running, waiting, due = counts[3 * index: 3 * index + 3]
            at = datetime.fromtimestamp(due / 1000, tz=UTC) if rated and due is not None and lane else None
            usage.append(KeyUsage(rk, ck, int(running), int(waiting) if lane else 0, at))
        usage.sort(key=lambda one: (-one.waiting, -one.running, one.concurrency_key or "",
                                    one.rate_key or ""))
        return usage, more

"""The one validator: a task's arguments and a submission's options, checked by this code
whichever way they come (``POST /tasks/{name}`` and its batch, ``await task.submit``,
``submit_sync``, ``tg.submit``, ``with_options``, schedules, replay), with the same rules and
the same messages.

Arguments are judged in their JSON form, the form the API receives and the worker is sent:
strict JSON types (no ``"1"`` or ``true`` for an integer, no ``1.0`` for an integer), finite
floats, integers within 64 bits, strings of valid Unicode. Python values are first written as
JSON (a datetime as ISO 8601, a model as an object, an enum as its value), so ``add.submit(x="1")``
is refused as ``POST /tasks/add`` with ``{"x": "1"}`` is.

Options: ``countdown`` 0 to :data:`MAX_DELAY` seconds (30 days); ``eta`` a time with a
timezone, from 1970 to 30 days ahead (a past one runs at once); one of the two, not both;
``priority`` an integer 0 to 9; ``expires`` above 0 to :data:`MAX_DELAY` seconds from
submission (a run not started by then never runs); an idempotency key of 1 to :data:`MAX_IDEMPOTENCY_KEY`
characters.

A refusal is :class:`~taskgate.InvalidArguments` whose ``errors`` are :class:`FieldError`\\ s;
``loc`` says where: ``("argument", "x")`` or ``("option", "countdown")`` from Python,
``("body", "x")``, ``("body", "items", 3, "x")``, ``("query", "countdown")`` or
``("header", "Idempotency-Key")`` over HTTP. The message is :func:`describe` of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from .exceptions import FieldError, InvalidArguments

#: The furthest a task may be delayed, by ``countdown`` or ``eta``: 30 days, in seconds.
MAX_DELAY = 30 * 86_400
#: The earliest ``eta`` taken (a past one runs at once).
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The longest idempotency key.
MAX_IDEMPOTENCY_KEY = 200
#: Where a task's arguments and a submission's options are, given from Python.
ARGUMENT: tuple[str, ...] = ("argument",)
OPTION: tuple[str, ...] = ("option",)

#: How :func:`describe` names the head of a location.
_PLACES = {"body": "body field", "query": "query parameter", "path": "path parameter",
           "header": "header", "argument": "argument", "option": "option"}


def describe(errors: Iterable[FieldError]) -> str:
    """The errors as one message: each place with what is wrong with it, ``; ``-separated."""
    return "; ".join(_one(error) for error in errors)


def _one(error: FieldError) -> str:
    loc = error.loc
    if error.type == "json_invalid" and loc and loc[0] == "body":
        # FastAPI puts the offset into ``loc``, as if it were a field
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        return f"body: invalid JSON{where}: {error.msg}"
    if not loc:
        return f"request: {error.msg}"
    where = _PLACES.get(str(loc[0]), str(loc[0]))
    name = ".".join(str(part) for part in loc[1:])
    return f"{where} {name!r}: {error.msg}" if name else f"{where}: {error.msg}"


def refusal(errors: list[FieldError]) -> InvalidArguments:
    """:class:`InvalidArguments` for ``errors``, its message :func:`describe` of them."""
    return InvalidArguments(describe(errors), errors)


def field_errors(found: Iterable[Mapping[str, Any]], at: tuple[str | int, ...] = ()) -> list[FieldError]:
    """Pydantic's (or FastAPI's) error dicts as :class:`FieldError`\\ s under ``at``."""
    errors = []
    for error in found:
        msg = str(error.get("msg", "invalid"))
        if error.get("type") == "json_invalid":
            msg = str((error.get("ctx") or {}).get("error", msg))
        errors.append(FieldError((*at, *error.get("loc", ())), msg, str(error.get("type", "value_error"))))
    return errors


# -- arguments --------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


def arguments_json(model: type[BaseModel], body: bytes | str, at: Loc = ARGUMENT) -> BaseModel:
    """``model`` from JSON ``body``, strictly (JSON's own types); else :class:`InvalidArguments`
    naming each field under ``at``."""
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise refusal(field_errors(exc.errors(include_url=False), at)) from None


def _plain(value: Any) -> Any:
    """What orjson does not write itself: models, enums, sets, decimals."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return list(value)
    if type(value).__name__ == "Decimal":
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def as_json(values: Mapping[str, Any], at: tuple[str | int, ...] = ARGUMENT) -> bytes:
    """``values`` as portable JSON, else :class:`InvalidArguments`."""
    try:
        return orjson.dumps(values, default=_plain)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise refusal([FieldError(at, "arguments must travel as portable JSON: integers within 64 bits, "
                                  f"strings of valid Unicode, no NaN or infinities ({exc})", "json_portable")]
                      ) from None


def arguments(model: type[BaseModel], values: Mapping[str, Any], at: Loc = ARGUMENT) -> BaseModel:
    """``model`` from Python ``values`` (a task's keyword arguments, a schedule's or a stored
    task's arguments), judged in their JSON form; else :class:`InvalidArguments`."""
    if not isinstance(values, Mapping):
        raise refusal([FieldError(at, "give the arguments as an object (a dict of name to value)",
                                  "dict_type")])
    bad = _non_finite(values, ())
    if bad is not None:  # orjson would write it as null: refuse it by name instead
        raise refusal([FieldError((*at, *bad), "Input should be a finite number", "finite_number")])
    return arguments_json(model, as_json(values, at), at)


def _non_finite(value: Any, path: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    """Where the first NaN or infinity in ``value`` is, if any."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    items: Iterable[tuple[str | int, Any]]
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _non_finite(item, (*path, key))
        if found is not None:
            return found
    return None


def call(model: type[BaseModel], args: tuple[Any, ...], kwargs: Mapping[str, Any],
         at: tuple[str | int, ...] = ARGUMENT) -> BaseModel:
    """``model`` from a Python call's positional and keyword arguments (``add.submit(1, y=2)``)."""
    if not args:
        return arguments(model, kwargs, at)
    fields = list(model.model_fields)
    if len(args) > len(fields):
        raise refusal([FieldError(at, f"takes {len(fields)} arguments, {len(args)} were given",
                                  "too_many_arguments")])
    given = dict(zip(fields, args, strict=False))
    twice = [FieldError((*at, name), "given twice, by position and by name", "multiple_values")
             for name in kwargs if name in given]
    if twice:
        raise refusal(twice)
    return arguments(model, {**given, **kwargs}, at)


# -- options ----------------------------------------------------------------------------------

class SubmitParameters(BaseModel):
    """When and in which order a task runs: the query parameters of ``POST /tasks/{name}``,
    and ``task.with_options(...)``'s."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    countdown: float | None = Field(default=None, json_schema_extra={"minimum": 0, "maximum": MAX_DELAY},
                                    description="Run no sooner than this many seconds from now: 0 to "
                                    f"{MAX_DELAY} (30 days). Give `countdown` or `eta`, not both.")
    eta: datetime | None = Field(default=None, description="Run no sooner than this time: ISO 8601 "
                                 "with a timezone, from 1970-01-01T00:00:00Z to 30 days from now. A "
                                 "past time runs at once, as Celery does. Give `countdown` or `eta`, "
                                 "not both.")
    priority: int | None = Field(default=None, json_schema_extra={"minimum": 0, "maximum": 9},
                                 description="0 (first) to 9 (last); default 0.")
    expires: float | None = Field(default=None,
                                  json_schema_extra={"exclusiveMinimum": 0, "maximum": MAX_DELAY},
                                  description="Seconds from now (above 0, at most "
                                  f"{MAX_DELAY}: 30 days) by which the task must have started: if it has "
                                  "not, it never runs and ends `expired` (checked when it would be queued "
                                  "and again when a worker would start it; a delayed, retrying or waiting "
                                  "run expires too).")

    @field_validator("countdown")
    @classmethod
    def _bounded(cls, countdown: float | None) -> float | None:
        if countdown is not None and not 0 <= countdown <= MAX_DELAY:
            raise PydanticCustomError("countdown_range", f"must be 0 to {MAX_DELAY} seconds (30 days); "
                                      "for a later run, submit it later")
        return countdown

    @field_validator("eta")
    @classmethod
    def _aware_and_near(cls, eta: datetime | None) -> datetime | None:
        if eta is None:
            return None
        if eta.tzinfo is None or eta.utcoffset() is None:
            raise PydanticCustomError("eta_naive", "needs a timezone, e.g. 2030-01-01T12:00:00Z (a time "
                                      "without one is not read as local time)")
        # Aware comparisons never build an out-of-range datetime (year 0, year 10000).
        latest = datetime.now(UTC) + timedelta(seconds=MAX_DELAY)
        if not EPOCH <= eta <= latest:
            raise PydanticCustomError("eta_range", "must be between 1970-01-01T00:00:00Z and 30 days from "
                                      f"now ({latest:%Y-%m-%dT%H:%M:%SZ}); a past eta runs at once, and "
                                      "for a later run, submit it later")
        return eta

    @field_validator("expires")
    @classmethod
    def _expiry(cls, expires: float | None) -> float | None:
        if expires is not None and not 0 < expires <= MAX_DELAY:
            raise PydanticCustomError("expires_range", f"must be above 0 and at most {MAX_DELAY} seconds "
                                      "(30 days) from now")
        return expires

    @field_validator("priority")
    @classmethod
    def _priority(cls, priority: int | None) -> int | None:
        if priority is not None and not 0 <= priority <= 9:
            raise PydanticCustomError("priority_range", "must be 0 (first) to 9 (last)")
        return priority


NO_OPTIONS = SubmitParameters()


def options(given: Mapping[str, Any], at: tuple[str | int, ...] = OPTION, *, strict: bool = True
            ) -> SubmitParameters:
    """``countdown``, ``eta``, ``priority`` and ``expires`` checked; else :class:`InvalidArguments` naming
    each under ``at``. ``strict``: Python's types (a number, a datetime); else read from text
    (a query string)."""
    if not given:
        return NO_OPTIONS
    if given.get("countdown") is not None and given.get("eta") is not None:  # before either's own rules
        raise refusal([FieldError((*at, "eta"), "give countdown or eta, not both", "countdown_and_eta")])
    try:
        return SubmitParameters.model_validate(given, strict=strict)
    except ValidationError as exc:
        raise refusal(field_errors(exc.errors(include_url=False), at)) from None


def idempotency_key(key: object, at: tuple[str | int, ...] = (*OPTION, "idempotency_key")) -> str | None:
    """``key`` if it is None or a string of 1 to :data:`MAX_IDEMPOTENCY_KEY` characters; else
    :class:`InvalidArguments` at ``at``."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise refusal([FieldError(at, "Input should be a valid string", "string_type")])
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise refusal([FieldError(at, f"must be 1 to {MAX_IDEMPOTENCY_KEY} characters", "string_length")])
    return key

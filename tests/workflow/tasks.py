"""Small tasks for the workflow tests, and their catalogue.

Each spec is built as ``@taskgate.task`` builds it (``registry.build_spec`` from the
function's signature and return type) without entering the process-wide allow-list: these
tests need only a catalogue to pass to ``validate_workflow``, and other tests in the same
process see the catalogue they expect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from taskgate.registry import RetryPolicy, TaskSpec, build_spec


class Row(BaseModel):
    """A row a task returns and another takes."""

    id: int
    name: str
    tags: list[str] = []


class Other(BaseModel):
    """A model with none of Row's fields."""

    colour: str


def number() -> int:
    return 1


def real() -> float:
    return 1.5


def anything() -> Any:
    return 1


def nothing() -> None:
    return None


def maybe() -> int | None:
    return None


def word() -> str:
    return "a"


def numbers(url: str = "") -> list[int]:
    return [1, 2]


def words() -> list[str]:
    return ["a"]


def row() -> Row:
    return Row(id=1, name="a")


def rows() -> list[Row]:
    return [Row(id=1, name="a")]


def counts() -> dict[str, int]:
    return {"a": 1}


def colour() -> Literal["red", "blue"]:
    return "red"


def double(x: int) -> int:
    return 2 * x


def shout(text: str) -> str:
    return text.upper()


def half(value: float) -> float:
    return value / 2


def keep(value: Any) -> Any:
    return value


def total(items: list[int]) -> int:
    return sum(items)


def label(item: int, prefix: str = "#") -> str:
    return f"{prefix}{item}"


def describe(row: Row) -> str:
    return row.name


def paint(shade: Literal["green", "white"]) -> str:
    return shade


def tint(shade: Literal["blue", "black"]) -> str:
    return shade


def optional(x: int | None = None) -> int:
    return x or 0


def pair(left: int, right: int) -> int:
    return left + right


FUNCTIONS: list[Callable[..., Any]] = [
    number, real, anything, nothing, maybe, word, numbers, words, row, rows, counts, colour,
    double, shout, half, keep, total, label, describe, paint, tint, optional, pair,
]


def _spec(func: Callable[..., Any]) -> TaskSpec:
    name = f"wf_{func.__name__}"
    return build_spec(func, name, f"taskgate.{name}", RetryPolicy(), None)


#: Public name (``wf_<function>``) -> spec.
CATALOGUE: dict[str, TaskSpec] = {spec.name: spec for spec in map(_spec, FUNCTIONS)}

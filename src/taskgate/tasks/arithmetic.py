"""Arithmetic: the tutorial's ``add``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..constants import INT64_MAX, INT64_MIN
from ..declare import task

Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX, description="A signed 64-bit integer.")]


def add_numbers(x: int, y: int) -> int:
    """Return ``x + y``; the sum must fit in a signed 64-bit integer, like the inputs."""
    total = x + y
    if not INT64_MIN <= total <= INT64_MAX:
        raise OverflowError(f"{x} + {y} does not fit in a signed 64-bit integer")
    return total


@task
def add(x: Int64, y: Int64) -> int:
    """Add two integers (the tutorial's task).

    Fails with OverflowError when the sum does not fit in a signed 64-bit integer.
    """
    return add_numbers(x, y)

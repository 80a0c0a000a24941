"""A task module the test of late imports imports only after the user's app opened
(``tests/api/test_router.py``); the user's worker imports it at start, as a worker would."""

from __future__ import annotations

from pydantic import BaseModel

import taskgate


class Total(BaseModel):
    """What ``late_total`` returns."""

    total: int
    count: int


@taskgate.task
def late_total(values: list[int]) -> Total:
    """Sum the values (declared in a module imported late)."""
    return Total(total=sum(values), count=len(values))

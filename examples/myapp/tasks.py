"""Your own tasks: declare them with @taskgate.task and name this module in TASKGATE_TASK_MODULES."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

import taskgate


class Invoice(BaseModel):
    """What make_invoice returns."""

    customer: str
    lines: int
    total_cents: int


@taskgate.task
def make_invoice(
    customer: Annotated[str, Field(min_length=1, max_length=100)],
    amounts_cents: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=1000)],
    discount_percent: Annotated[int, Field(ge=0, le=100)] = 0,
) -> Invoice:
    """Total an invoice for a customer.

    Each amount is one invoice line in cents; the discount applies to the total.
    """
    for done, _ in enumerate(amounts_cents, start=1):
        taskgate.report_progress(done, len(amounts_cents))
    total = sum(amounts_cents) * (100 - discount_percent) // 100
    return Invoice(customer=customer, lines=len(amounts_cents), total_cents=total)

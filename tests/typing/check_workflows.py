"""Checked by mypy --strict (tests/test_workflow_builder.py), never run: a reference to a node's
result is typed as that result, so passing it to a parameter of another type is an error."""

from __future__ import annotations

from typing import Any, assert_type

from pydantic import BaseModel

import taskgate


class Summary(BaseModel):
    count: int
    label: str


@taskgate.task
def numbers(count: int) -> list[int]:
    return list(range(count))


@taskgate.task
def square(n: int, log: str = "") -> int:
    return n * n


@taskgate.task
def total(values: list[int]) -> int:
    return sum(values)


@taskgate.task
def summarise(values: list[int]) -> Summary:
    return Summary(count=len(values), label="")


@taskgate.task
def shout(text: str) -> str:
    return text.upper()


@taskgate.task
def power(base: int, exponent: int) -> int:
    return int(base**exponent)


async def matching() -> None:
    wf = taskgate.Workflow("typed")
    rows = wf.add(numbers, count=3)
    assert_type(rows, list[int])
    squares = wf.map(square, over=rows)
    assert_type(squares, list[int])
    assert_type(wf.map(power, over=rows, argument="base", exponent=2), list[int])
    assert_type(wf.add(square, n=rows[0]), int)
    summary = wf.add(summarise, values=squares)
    assert_type(wf.add(shout, text=summary.label), str)
    summed = wf.node("sum", after=[summary]).add(total, values=squares)
    run = await wf.submit(returns=summed)
    assert_type(run, taskgate.WorkflowRun[int])
    assert_type(await run.result(timeout=10), int)
    assert_type(await wf.submit(), taskgate.WorkflowRun[Any])


def mismatched() -> None:
    wf = taskgate.Workflow("wrong")
    rows = wf.add(numbers, count=3)
    one = wf.add(total, values=rows)
    wf.add(total, values=one)  # type: ignore[arg-type]  # an int where a list[int] goes
    wf.add(shout, text=one)  # type: ignore[arg-type]  # an int where a str goes
    wf.map(shout, over=rows)  # type: ignore[arg-type]  # items are int, shout takes str
    wf.map(square, over=one)  # type: ignore[call-overload]  # no list to map over
    wf.add(total, value=rows)  # type: ignore[call-arg]  # no such parameter
    wf.add(shout, text=wf.add(summarise, values=rows).count)  # type: ignore[arg-type]

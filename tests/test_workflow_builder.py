"""``taskgate.Workflow`` and ``WorkflowRun``: workflows built in Python, run against the session's
Valkey and real worker; their types checked by mypy --strict (``tests/typing/check_workflows.py``)."""

from __future__ import annotations

import time
from typing import Any

import pytest

import taskgate
from taskgate.tasks.arithmetic import add

from . import sample_tasks
from .helpers import ROOT
from .helpers import with_gate as run
from .test_typing import mypy


def test_a_chain_passes_each_result_on_and_names_its_nodes(redis_url: str, worker: object) -> None:
    wf = taskgate.Workflow("chain")
    first = wf.add(add, 1, y=2)
    second = wf.add(add, x=first, y=10)
    squared = wf.node("squared").add(sample_tasks.power, base=second, exponent=2)
    assert wf.sinks == ["squared"]

    async def body(tg: taskgate.Taskgate) -> tuple[int, float, Any]:
        flow = await wf.submit(returns=squared)
        began = time.monotonic()
        result = await flow.result(timeout=30)
        return result, time.monotonic() - began, await flow.status()

    result, waited, view = run(redis_url, body, builtins=True)
    assert result == (1 + 2 + 10) ** 2
    assert waited < 15  # woken by the sink's end, not by the timeout's end
    assert (view.state, view.result) == ("succeeded", 169)
    assert {name: (node.task, node.state, node.parents) for name, node in view.nodes.items()} == {
        "add": ("add", "succeeded", []), "add_2": ("add", "succeeded", ["add"]),
        "squared": ("power", "succeeded", ["add_2"])}


def test_fan_out_and_in_with_typed_results(redis_url: str, worker: object) -> None:
    wf = taskgate.Workflow("fan")
    rows = wf.add(sample_tasks.numbers, count=5)
    squares = wf.map(sample_tasks.square, over=rows)  # each item to square's only required parameter
    summed = wf.add(sample_tasks.total, values=squares)
    assert wf.spec().as_json()["nodes"] == {
        "numbers": {"task": "numbers", "arguments": {"count": 5}, "after": []},
        "square": {"map": {"over": {"$result": "numbers"}, "task": "square", "argument": "n", "arguments": {}},
                   "after": []},
        "total": {"task": "total", "arguments": {"values": {"$result": "square"}}, "after": []}}

    mapped = taskgate.Workflow("map sink")  # a map as the sink: the list of its runs' results
    counted = mapped.add(sample_tasks.numbers, count=4)
    mapped.map(sample_tasks.power, over=counted, argument="exponent", base=2)
    mapped.node("third").add(sample_tasks.square, n=counted[3])  # a path into a result

    async def body(tg: taskgate.Taskgate) -> tuple[int, taskgate.WorkflowRun[Any], list[Any]]:
        flow = await wf.submit(returns=summed)
        total = await flow.result(timeout=20)
        other = await mapped.submit()
        return total, other, [await other.wait(timeout=20)]

    total, other, (view,) = run(redis_url, body, builtins=True)
    assert total == 0 + 1 + 4 + 9 + 16 and isinstance(total, int)
    assert other.sink is None and view.state == "succeeded"
    assert view.nodes["power"].items is not None and view.nodes["power"].items.total == 4

    one = taskgate.Workflow("map sink only")
    one.map(sample_tasks.power, over=one.add(sample_tasks.numbers, count=4), argument="exponent", base=2)

    async def sink(tg: taskgate.Taskgate) -> list[int]:
        flow = await one.submit()
        got: list[int] = await flow.result(timeout=20)
        return got

    assert run(redis_url, sink, builtins=True) == [1, 2, 4, 8]


def test_a_failure_raises_the_failed_runs_error(redis_url: str, worker: object) -> None:
    wf = taskgate.Workflow("fails", on_failure="stop")
    failing = wf.add(sample_tasks.boom, message="no luck")
    after = wf.node("after", after=[failing]).add(sample_tasks.total, values=[1, 2])

    async def body(tg: taskgate.Taskgate) -> tuple[pytest.ExceptionInfo[taskgate.TaskFailed], Any, Any]:
        flow = await wf.submit(returns=after)
        with pytest.raises(taskgate.TaskFailed) as raised:
            await flow.result(timeout=20)
        return raised, flow, await flow.wait(timeout=20)

    raised, flow, view = run(redis_url, body)
    assert raised.value.task_id == flow.tasks["boom"]
    assert raised.value.error == {"type": "ValueError", "message": "no luck", "retryable": False}
    assert f"in workflow {flow.id}, node 'boom'" in raised.value.__notes__
    assert view.state == "failed"
    assert {name: node.state for name, node in view.nodes.items()} == {"boom": "failed", "after": "skipped"}


def test_an_invalid_workflow_is_refused_at_submit(redis_url: str) -> None:
    wf = taskgate.Workflow("invalid")
    one = wf.add(sample_tasks.square, n=3)
    wf.map(sample_tasks.square, over=one)  # type: ignore[arg-type]  # an int is no list

    async def body(tg: taskgate.Taskgate) -> None:
        with pytest.raises(taskgate.InvalidArguments, match="square_2"):
            await wf.submit()

    run(redis_url, body)


def test_cancel_ends_it_and_result_raises_cancelled(redis_url: str, worker: object) -> None:
    wf = taskgate.Workflow("cancelled")
    slow = wf.add(sample_tasks.sleepy, seconds=30)
    wf.node(after=[slow]).add(sample_tasks.total, values=[1])

    async def body(tg: taskgate.Taskgate) -> tuple[float, Any, Any]:
        flow = await wf.submit(owner="ann")  # a workflow for an owner: only it (and admins) see it
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await flow.result(timeout=0.3)
        waited = time.monotonic() - began
        cancelled = await flow.cancel()
        with pytest.raises(taskgate.TaskCancelled, match=f"workflow {flow.id} was cancelled"):
            await flow.result(timeout=20)
        await flow.wait(timeout=20)
        with pytest.raises(taskgate.Conflict):
            await flow.cancel()
        return waited, cancelled, await flow.status()

    waited, cancelled, view = run(redis_url, body)
    assert waited < 3
    assert cancelled.state == "cancelled"
    assert view.state == "cancelled" and view.finished_at is not None and view.owner == "ann"
    assert view.nodes["total"].state == "skipped"
    assert view.nodes["sleepy"].state == "cancelled"


def test_the_builder_refuses_what_the_spec_cannot_say() -> None:
    wf = taskgate.Workflow("refused")
    rows = wf.add(sample_tasks.numbers, count=3)
    with pytest.raises(TypeError, match="whole value"):
        wf.add(sample_tasks.total, values=[rows[0], 1])
    with pytest.raises(ValueError, match="another workflow"):
        taskgate.Workflow("other").add(sample_tasks.total, values=rows)
    with pytest.raises(ValueError, match="has a node 'numbers'"):
        wf.node("numbers").add(sample_tasks.numbers, count=1)
    with pytest.raises(TypeError, match="2 required parameters.*argument="):
        wf.map(sample_tasks.power, over=rows)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="map over a node's result"):
        wf.map(sample_tasks.square, over=[1, 2])
    with pytest.raises(TypeError, match="does not exist until the workflow runs"):
        list(rows)
    with pytest.raises(TypeError, match="task 'numbers'.*count"):
        wf.add(sample_tasks.numbers)  # type: ignore[call-arg]
    assert repr(rows.items[2]) == "<result of node 'numbers' at 'items.2'>"


def test_returns_must_be_the_only_sink(redis_url: str) -> None:
    wf = taskgate.Workflow("two sinks")
    rows = wf.add(sample_tasks.numbers, count=3)
    wf.add(sample_tasks.total, values=rows)

    async def body(tg: taskgate.Taskgate) -> None:
        with pytest.raises(ValueError, match="only sink.*total"):
            await wf.submit(returns=rows)

    run(redis_url, body)


def test_a_references_type_is_checked_by_mypy() -> None:
    checked = mypy(str(ROOT / "tests" / "typing" / "check_workflows.py"))
    assert checked.returncode == 0, checked.stdout + checked.stderr

"""A workflow's graph: parents (``after``, references, a map's ``over``), children, roots,
sinks and an order where every node comes after its parents."""

from __future__ import annotations

from typing import Any

import pytest

from taskgate.workflow.graph import CycleError, Graph, UnknownNode
from taskgate.workflow.spec import WorkflowSpec


def graph(nodes: dict[str, Any]) -> Graph:
    return Graph.of(WorkflowSpec.model_validate({"name": "w", "nodes": nodes}))


def ordered(found: Graph) -> None:
    assert sorted(found.order) == sorted(found.spec.nodes)
    for name in found.order:
        assert all(found.order.index(parent) < found.order.index(name) for parent in found.parents[name])


def test_a_linear_graph() -> None:
    found = graph({
        "c": {"task": "t", "arguments": {"x": {"$result": "b"}}},
        "b": {"task": "t", "after": ["a"]},
        "a": {"task": "t"},
    })
    assert found.order == ("a", "b", "c")
    assert found.parents == {"c": ("b",), "b": ("a",), "a": ()}
    assert found.children == {"c": (), "b": ("c",), "a": ("b",)}
    assert found.roots == ("a",) and found.sinks == ("c",)
    assert [found.pending(name) for name in "abc"] == [0, 1, 1]


def test_a_diamond_waits_for_both_sides_once() -> None:
    found = graph({
        "top": {"task": "t"},
        "left": {"task": "t", "arguments": {"x": {"$result": "top"}}},
        "right": {"task": "t", "arguments": {"x": {"$result": "top", "path": "a"}, "y": {"$result": "top"}},
                  "after": ["top"]},
        "bottom": {"task": "t", "arguments": {"x": {"$result": "left"}, "y": {"$result": "right"}},
                   "after": ["left"]},
    })
    ordered(found)
    assert found.order[0] == "top" and found.order[-1] == "bottom"
    assert found.parents["right"] == ("top",) and found.parents["bottom"] == ("left", "right")
    assert found.children["top"] == ("left", "right") and found.pending("bottom") == 2
    assert found.roots == ("top",) and found.sinks == ("bottom",)
    assert found.descendants("top") == {"left", "right", "bottom"} and found.descendants("left") == {"bottom"}


def test_a_fan_out_and_in_through_a_map_node() -> None:
    found = graph({
        "report": {"task": "t", "arguments": {"items": {"$result": "each"}}},
        "each": {"map": {"over": {"$result": "rows", "path": "data"}, "task": "t", "argument": "row",
                         "arguments": {"prefix": {"$result": "config"}}}},
        "rows": {"task": "t"},
        "config": {"task": "t"},
        "alone": {"task": "t"},
    })
    ordered(found)
    assert found.parents["each"] == ("config", "rows") and found.children["rows"] == ("each",)
    assert found.children["each"] == ("report",) and found.pending("each") == 2
    assert found.roots == ("rows", "config", "alone") and found.sinks == ("report", "alone")
    assert found.node("each").task == "t"


def test_a_cycle_or_an_unknown_parent_cannot_be_a_graph() -> None:
    with pytest.raises(CycleError) as caught:
        graph({"a": {"task": "t", "after": ["b"]}, "b": {"task": "t", "after": ["a"]}})
    assert set(caught.value.args[1]) == {"a", "b"}
    with pytest.raises(UnknownNode, match="node 'a' names node 'zz'"):
        graph({"a": {"task": "t", "after": ["zz"]}})

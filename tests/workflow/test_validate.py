"""``validate_workflow``: every bad input refused before anything runs, as one
``InvalidArguments`` naming the node and the field; valid graphs come back as their graph."""

from __future__ import annotations

from typing import Any

import pytest

from taskgate.exceptions import FieldError, InvalidArguments
from taskgate.workflow.graph import Graph
from taskgate.workflow.spec import WorkflowSpec
from taskgate.workflow.validate import validate_workflow

from .tasks import CATALOGUE


def check(nodes: dict[str, Any], allowed: frozenset[str] | None = None) -> Graph:
    spec = WorkflowSpec.model_validate({"name": "w", "nodes": nodes})
    return validate_workflow(spec, CATALOGUE, lambda name: allowed is None or name in allowed)


def refused(nodes: dict[str, Any], allowed: frozenset[str] | None = None) -> InvalidArguments:
    with pytest.raises(InvalidArguments) as caught:
        check(nodes, allowed)
    return caught.value


def only(nodes: dict[str, Any]) -> tuple[FieldError, str]:
    """The one error, and the message."""
    exc = refused(nodes)
    assert len(exc.errors) == 1, exc.errors
    return exc.errors[0], str(exc)


def ref(node: str, path: str | None = None) -> dict[str, str]:
    return {"$result": node} | ({} if path is None else {"path": path})


# -- valid graphs -----------------------------------------------------------------------------

def test_a_linear_workflow_passes() -> None:
    found = check({
        "fetch": {"task": "wf_number"},
        "twice": {"task": "wf_double", "arguments": {"x": ref("fetch")}},
        "show": {"task": "wf_label", "arguments": {"item": ref("twice"), "prefix": "n="}},
    })
    assert found.order == ("fetch", "twice", "show") and found.children["twice"] == ("show",)


def test_a_diamond_passes() -> None:
    found = check({
        "top": {"task": "wf_number"},
        "left": {"task": "wf_double", "arguments": {"x": ref("top")}},
        "right": {"task": "wf_double", "arguments": {"x": 3}, "after": ["top"]},
        "bottom": {"task": "wf_pair", "arguments": {"left": ref("left"), "right": ref("right")}},
    })
    assert found.order[0] == "top" and found.order[-1] == "bottom"
    assert found.parents["bottom"] == ("left", "right") and found.children["top"] == ("left", "right")


def test_a_fan_out_and_fan_in_passes() -> None:
    found = check({
        "rows": {"task": "wf_numbers", "arguments": {"url": "https://example.com"}},
        "each": {"map": {"over": ref("rows"), "task": "wf_double", "argument": "x"}},
        "sum": {"task": "wf_total", "arguments": {"items": ref("each")}},
        "names": {"map": {"over": ref("rows"), "task": "wf_label", "argument": "item",
                          "arguments": {"prefix": ref("word")}}},
        "word": {"task": "wf_word"},
    })
    assert found.parents["each"] == ("rows",) and found.parents["sum"] == ("each",)
    assert found.parents["names"] == ("word", "rows") and found.roots == ("rows", "word")


# -- the graph's names ------------------------------------------------------------------------

def test_a_cycle_is_refused_naming_its_nodes() -> None:
    error, message = only({
        "a": {"task": "wf_double", "arguments": {"x": ref("c")}},
        "b": {"task": "wf_double", "arguments": {"x": ref("a")}},
        "c": {"task": "wf_double", "arguments": {"x": ref("b")}},
        "d": {"task": "wf_number"},
    })
    assert error.type == "workflow_cycle" and error.loc[:2] == ("body", "nodes") and str(error.loc[2]) in "abc"
    assert "cycle" in message and all(f"{name}" in message for name in "abc") and "'d'" not in message


@pytest.mark.parametrize(("nodes", "loc", "kind"), [
    ({"a": {"task": "wf_number", "after": ["a"]}}, ("after", 0), "workflow_self_reference"),
    ({"a": {"task": "wf_double", "arguments": {"x": ref("a")}}}, ("arguments", "x"), "workflow_self_reference"),
    ({"a": {"map": {"over": ref("a"), "task": "wf_double", "argument": "x"}}}, ("map", "over"),
     "workflow_self_reference"),
    ({"a": {"task": "wf_number", "after": ["nope"]}}, ("after", 0), "workflow_unknown_node"),
    ({"a": {"task": "wf_double", "arguments": {"x": ref("nope")}}}, ("arguments", "x"), "workflow_unknown_node"),
    ({"a": {"map": {"over": ref("nope"), "task": "wf_double", "argument": "x"}}}, ("map", "over"),
     "workflow_unknown_node"),
    ({"a": {"map": {"over": ref("b"), "task": "wf_label", "argument": "item",
                    "arguments": {"prefix": ref("nope")}}}, "b": {"task": "wf_numbers"}},
     ("map", "arguments", "prefix"), "workflow_unknown_node"),
    ({"a": {"task": "wf_missing"}}, ("task",), "unknown_task"),
    ({"a": {"map": {"over": ref("b"), "task": "wf_missing", "argument": "x"}}, "b": {"task": "wf_numbers"}},
     ("map", "task"), "unknown_task"),
])
def test_a_name_that_is_not_there_is_refused_at_its_node(nodes: dict[str, Any], loc: tuple[Any, ...],
                                                          kind: str) -> None:
    error, message = only(nodes)
    assert (error.loc, error.type) == (("body", "nodes", "a", *loc), kind)
    assert message.startswith("node 'a', ")


def test_a_task_the_caller_may_not_submit_reads_as_unknown() -> None:
    nodes = {"a": {"task": "wf_number"}, "b": {"task": "wf_double", "arguments": {"x": ref("a")}}}
    exc = refused(nodes, allowed=frozenset({"wf_number"}))
    assert [(error.loc, error.type) for error in exc.errors] == [(("body", "nodes", "b", "task"), "unknown_task")]
    assert str(exc) == ("node 'b', task: no task named 'wf_double'; GET /tasks/catalogue lists the tasks "
                        "you can run")
    assert check(nodes, allowed=frozenset({"wf_number", "wf_double"})).order == ("a", "b")


def test_every_error_is_named_at_once() -> None:
    exc = refused({"a": {"task": "wf_missing", "after": ["x"]}, "b": {"task": "wf_number", "after": ["y"]}})
    assert {error.loc for error in exc.errors} == {("body", "nodes", "a", "task"), ("body", "nodes", "a", "after", 0),
                                                   ("body", "nodes", "b", "after", 0)}
    assert "node 'a', task: " in str(exc) and "node 'b', after: no node named 'y'" in str(exc)


def test_too_many_nodes_is_refused_even_built_without_validation() -> None:
    base = WorkflowSpec.model_validate({"name": "w", "nodes": {"a": {"task": "wf_number"}}})
    big = base.model_copy(update={"nodes": {f"n{index}": base.nodes["a"] for index in range(1001)}})
    with pytest.raises(InvalidArguments, match="at most 1000 nodes") as caught:
        validate_workflow(big, CATALOGUE, lambda _: True)
    assert caught.value.errors[0].loc == ("body", "nodes")


# -- literal arguments, by the one validator --------------------------------------------------

@pytest.mark.parametrize(("arguments", "field", "kind"), [
    ({"x": "1"}, "x", "int_type"),                    # JSON's own types, strictly
    ({"x": 1.0}, "x", "int_type"),
    ({"x": True}, "x", "int_type"),
    ({}, "x", "missing"),
    ({"x": 1, "y": 2}, "y", "extra_forbidden"),
    ({"x": 1, "y": ref("b")}, "y", "extra_forbidden"),  # a reference to no argument of the task
])
def test_arguments_are_judged_as_the_task_judges_them(arguments: dict[str, Any], field: str, kind: str) -> None:
    error, message = only({"a": {"task": "wf_double", "arguments": arguments}, "b": {"task": "wf_number"}})
    assert (error.loc, error.type) == (("body", "nodes", "a", "arguments", field), kind)
    assert message.startswith(f"node 'a', argument '{field}': ")


def test_a_nested_argument_error_names_its_place() -> None:
    error, message = only({"a": {"task": "wf_total", "arguments": {"items": [1, "2"]}}})
    assert error.loc == ("body", "nodes", "a", "arguments", "items", 1) and error.type == "int_type"
    assert message.startswith("node 'a', argument 'items.1': ")


def test_a_map_argument_is_one_of_its_task_and_counts_as_given() -> None:
    base = {"rows": {"task": "wf_numbers"}}
    assert check({**base, "m": {"map": {"over": ref("rows"), "task": "wf_label", "argument": "item"}}})
    exc = refused({**base, "m": {"map": {"over": ref("rows"), "task": "wf_label", "argument": "row"}}})
    assert [(error.loc, error.type) for error in exc.errors] == [
        (("body", "nodes", "m", "map", "argument"), "workflow_unknown_argument"),
        (("body", "nodes", "m", "map", "arguments", "item"), "missing")]  # the task's item is still due
    assert str(exc) == ("node 'm', map argument: task 'wf_label' has no argument 'row' (it takes 'item', "
                        "'prefix'); node 'm', argument 'item': Field required")
    error, message = only({**base, "m": {"map": {"over": ref("rows"), "task": "wf_label", "argument": "item",
                                                 "arguments": {"item": 3}}}})
    assert (error.loc, error.type) == (("body", "nodes", "m", "map", "arguments", "item"), "multiple_values")
    error, message = only({**base, "m": {"map": {"over": ref("rows"), "task": "wf_label", "argument": "item",
                                                 "arguments": {"prefix": 3}}}})
    assert (error.loc, error.type) == (("body", "nodes", "m", "map", "arguments", "prefix"), "string_type")
    assert message.startswith("node 'm', argument 'prefix': ")
    error, _ = only({**base, "m": {"map": {"over": ref("rows"), "task": "wf_pair", "argument": "left"}}})
    assert (error.loc, error.type) == (("body", "nodes", "m", "map", "arguments", "right"), "missing")


# -- references, by declared types ------------------------------------------------------------

@pytest.mark.parametrize(("parent", "child", "argument", "path"), [
    ("wf_number", "wf_double", "x", None),
    ("wf_number", "wf_half", "value", None),       # an integer is a number
    ("wf_anything", "wf_shout", "text", None),     # an undeclared result is not checked
    ("wf_number", "wf_keep", "value", None),       # an argument of Any takes anything
    ("wf_numbers", "wf_total", "items", None),
    ("wf_numbers", "wf_double", "x", "0"),
    ("wf_row", "wf_double", "x", "id"),            # a model's field
    ("wf_row", "wf_shout", "text", "tags.2"),
    ("wf_rows", "wf_shout", "text", "0.name"),
    ("wf_rows", "wf_describe", "row", "3"),        # a model into the same model
    ("wf_counts", "wf_double", "x", "anykey"),     # a dict's value
    ("wf_maybe", "wf_double", "x", None),          # a union fits when one member does
    ("wf_number", "wf_optional", "x", None),
    ("wf_nothing", "wf_optional", "x", None),
    ("wf_colour", "wf_tint", "shade", None),       # enums sharing a value
])
def test_a_result_that_can_fit_its_argument_passes(parent: str, child: str, argument: str,
                                                   path: str | None) -> None:
    check({"p": {"task": parent}, "c": {"task": child, "arguments": {argument: ref("p", path)}}})


@pytest.mark.parametrize(("parent", "child", "argument", "path", "says"), [
    ("wf_number", "wf_shout", "text", None, "node 'p' returns integer, which cannot fit this argument (string)"),
    ("wf_real", "wf_double", "x", None, "returns number"),  # a float result is stored as 2.0
    ("wf_word", "wf_double", "x", None, "returns string"),
    ("wf_nothing", "wf_double", "x", None, "returns null"),
    ("wf_words", "wf_total", "items", None, "returns list of string, which cannot fit this argument (list of integer)"),
    ("wf_numbers", "wf_shout", "text", "0", "returns integer at '0'"),
    ("wf_row", "wf_shout", "text", "id", "returns integer at 'id'"),
    ("wf_row", "wf_double", "x", None, "returns object Row"),
    ("wf_counts", "wf_shout", "text", "a", "returns integer at 'a'"),
    ("wf_colour", "wf_shout", "text", None, None),  # a literal string fits a string: passes below
])
def test_a_result_that_cannot_fit_its_argument_is_refused(parent: str, child: str, argument: str,
                                                          path: str | None, says: str | None) -> None:
    nodes = {"p": {"task": parent}, "c": {"task": child, "arguments": {argument: ref("p", path)}}}
    if says is None:
        check(nodes)
        return
    error, message = only(nodes)
    assert (error.loc, error.type) == (("body", "nodes", "c", "arguments", argument), "workflow_result_type")
    assert message.startswith(f"node 'c', argument '{argument}': ") and says in message


def test_enums_with_no_value_in_common_are_refused() -> None:
    error, message = only({"p": {"task": "wf_colour"}, "c": {"task": "wf_paint", "arguments": {"shade": ref("p")}}})
    assert error.type == "workflow_result_type" and "'red' or 'blue'" in message


@pytest.mark.parametrize(("parent", "path"), [
    ("wf_row", "colour"), ("wf_row", "id.x"), ("wf_number", "a"), ("wf_numbers", "first"), ("wf_rows", "0.x"),
])
def test_a_path_the_result_cannot_have_is_refused(parent: str, path: str) -> None:
    error, message = only({"p": {"task": parent}, "c": {"task": "wf_keep", "arguments": {"value": ref("p", path)}}})
    assert (error.loc, error.type) == (("body", "nodes", "c", "arguments", "value"), "workflow_path")
    assert message.startswith("node 'c', argument 'value': the result of node 'p' (") and repr(path) in message


def test_a_map_node_yields_the_list_of_its_task_results() -> None:
    base = {"rows": {"task": "wf_numbers"},
            "each": {"map": {"over": ref("rows"), "task": "wf_double", "argument": "x"}}}
    check({**base, "sum": {"task": "wf_total", "arguments": {"items": ref("each")}}})
    check({**base, "one": {"task": "wf_double", "arguments": {"x": ref("each", "0")}}})
    error, message = only({**base, "no": {"task": "wf_double", "arguments": {"x": ref("each")}}})
    assert error.loc == ("body", "nodes", "no", "arguments", "x") and "returns list of integer" in message


# -- map over ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("parent", "path", "task", "argument"), [
    ("wf_numbers", None, "wf_double", "x"),   # list[int] into an int argument
    ("wf_numbers", None, "wf_half", "value"),
    ("wf_rows", None, "wf_describe", "row"),
    ("wf_row", "tags", "wf_shout", "text"),
    ("wf_anything", None, "wf_double", "x"),
])
def test_a_map_over_a_list_that_fits_passes(parent: str, path: str | None, task: str, argument: str) -> None:
    check({"p": {"task": parent}, "m": {"map": {"over": ref("p", path), "task": task, "argument": argument}}})


@pytest.mark.parametrize(("parent", "path", "task", "argument", "kind"), [
    ("wf_numbers", None, "wf_shout", "text", "workflow_result_type"),   # list[int] into a str argument
    ("wf_rows", None, "wf_double", "x", "workflow_result_type"),
    ("wf_number", None, "wf_double", "x", "workflow_not_a_list"),
    ("wf_row", None, "wf_double", "x", "workflow_not_a_list"),
    ("wf_row", "name", "wf_shout", "text", "workflow_not_a_list"),
    ("wf_row", "nope", "wf_shout", "text", "workflow_path"),
])
def test_a_map_over_what_cannot_be_its_list_is_refused(parent: str, path: str | None, task: str,
                                                       argument: str, kind: str) -> None:
    error, message = only({"p": {"task": parent},
                           "m": {"map": {"over": ref("p", path), "task": task, "argument": argument}}})
    assert (error.loc, error.type) == (("body", "nodes", "m", "map", "over"), kind)
    assert message.startswith("node 'm', map over: ")
    if kind == "workflow_result_type":
        assert f"whose items cannot fit argument '{argument}' of task '{task}'" in message


def test_a_thousand_node_fan_out_and_in_passes() -> None:
    nodes: dict[str, Any] = {"source": {"task": "wf_numbers"}}
    nodes |= {f"n{index}": {"task": "wf_double", "arguments": {"x": ref("source", str(index))}}
              for index in range(998)}
    nodes["sink"] = {"task": "wf_total", "arguments": {"items": [1]}, "after": [f"n{index}" for index in range(998)]}
    found = check(nodes)
    assert found.order[0] == "source" and found.order[-1] == "sink" and len(found.order) == 1000
    assert found.pending("sink") == 998 and len(found.children["source"]) == 998

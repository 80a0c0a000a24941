"""The body of ``POST /workflows`` as models: nodes, references, map nodes, and what their
shape alone refuses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from taskgate.workflow.spec import MAX_NODES, MapNode, Ref, TaskNode, WorkflowSpec, parents_of


def spec(nodes: dict[str, Any], **extra: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"name": "w", "nodes": nodes, **extra})


def test_task_and_map_nodes_with_references_read_as_models() -> None:
    wf = spec({
        "fetch": {"task": "wf_numbers", "arguments": {"url": "u"}},
        "each": {"map": {"over": {"$result": "fetch"}, "task": "wf_label", "argument": "item",
                         "arguments": {"prefix": {"$result": "name", "path": "a.0"}}}},
        "name": {"task": "wf_word"},
        "sum": {"task": "wf_total", "arguments": {"items": {"$result": "fetch"}, "note": {"x": [1]}},
                "after": ["each"]},
    })
    assert wf.on_failure == "stop"
    fetch, each, total = wf.nodes["fetch"], wf.nodes["each"], wf.nodes["sum"]
    assert isinstance(fetch, TaskNode) and fetch.arguments == {"url": "u"} and fetch.after == []
    assert isinstance(each, MapNode) and each.map.over == Ref.of("fetch") and each.task == "wf_label"
    assert each.arguments == {"prefix": Ref.of("name", "a.0")}
    assert Ref.of("name", "a.0").parts() == ["a", "0"] and Ref.of("x").parts() == []
    assert isinstance(total, TaskNode) and total.arguments["note"] == {"x": [1]}
    assert parents_of(total) == ["each", "fetch"] and parents_of(each) == ["name", "fetch"]
    # written back as it came, references as JSON
    assert wf.as_json()["nodes"]["each"]["map"]["arguments"] == {"prefix": {"$result": "name", "path": "a.0"}}
    assert wf.as_json()["nodes"]["sum"]["arguments"]["items"] == {"$result": "fetch"}
    assert WorkflowSpec.model_validate(wf.as_json()) == wf


def test_a_literal_null_argument_is_kept() -> None:
    wf = spec({"a": {"task": "wf_optional", "arguments": {"x": None}}})
    assert wf.as_json()["nodes"]["a"]["arguments"] == {"x": None}


@pytest.mark.parametrize(("nodes", "where"), [
    ({"1bad": {"task": "t"}}, "nodes.1bad.[key]"),
    ({"a.b": {"task": "t"}}, "nodes.a.b.[key]"),
    ({"a" * 65: {"task": "t"}}, f"nodes.{'a' * 65}.[key]"),
    ({"a": {"task": "t", "extra": 1}}, "nodes.a.task.extra"),
    ({"a": {"task": "t", "arguments": {"x": {"$result": "b", "other": 1}}}}, "nodes.a.task.arguments.x"),
    ({"a": {"task": "t", "arguments": {"x": {"$result": 3}}}}, "nodes.a.task.arguments.x"),
    ({"a": {"task": "t", "arguments": {"x": {"$result": "b", "path": ""}}}}, "nodes.a.task.arguments.x"),
    ({"a": {"task": "t", "arguments": {"x": {"$result": "b", "path": "a..b"}}}}, "nodes.a.task.arguments.x"),
    ({"a": {"task": "t", "arguments": {"x": [{"$result": "b"}]}}}, "nodes.a.task.arguments.x"),
    ({"a": {"task": "t", "arguments": {"x": {"deep": {"$result": "b"}}}}}, "nodes.a.task.arguments.x"),
    ({"a": {"task": "t", "after": ["no way"]}}, "nodes.a.task.after.0"),
    ({"a": {"map": {"over": {"$result": "b"}, "task": "t"}}}, "nodes.a.map.map.argument"),
    ({"a": {"map": {"over": [1, 2], "task": "t", "argument": "x"}}}, "nodes.a.map.map.over"),
    ({"a": {"map": {"over": {"$result": "b"}, "task": "t", "argument": "x"}, "task": "t"}}, "nodes.a.map.task"),
    ({}, "nodes"),
])
def test_a_malformed_body_is_refused_where_it_is_wrong(nodes: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        spec(nodes)
    assert where in {".".join(str(part) for part in error["loc"]) for error in caught.value.errors()}


def test_too_many_nodes_or_a_bad_on_failure_is_refused() -> None:
    with pytest.raises(ValidationError, match="at most 1000 items"):
        spec({f"n{index}": {"task": "t"} for index in range(MAX_NODES + 1)})
    assert len(spec({f"n{index}": {"task": "t"} for index in range(MAX_NODES)}).nodes) == MAX_NODES
    with pytest.raises(ValidationError, match="on_failure"):
        spec({"a": {"task": "t"}}, on_failure="retry")
    assert spec({"a": {"task": "t"}}, on_failure="continue").on_failure == "continue"
    with pytest.raises(ValidationError, match="name"):
        WorkflowSpec.model_validate({"name": "", "nodes": {"a": {"task": "t"}}})


def test_the_openapi_schema_documents_references_and_both_kinds_of_node() -> None:
    schema = WorkflowSpec.model_json_schema()
    defs = schema["$defs"]
    assert set(defs) >= {"Ref", "TaskNode", "MapNode", "MapSpec"}
    assert defs["Ref"]["required"] == ["$result"] and defs["Ref"]["properties"]["path"]["description"]
    assert defs["TaskNode"]["properties"]["arguments"]["additionalProperties"]["anyOf"][0] == {
        "$ref": "#/$defs/Ref"}
    for model in ("TaskNode", "MapNode", "MapSpec"):
        for name, field in defs[model]["properties"].items():
            assert field.get("description") or "$ref" in field, (model, name)
    assert schema["properties"]["nodes"]["description"] and schema["examples"]

"""Whether a declared result fits a declared argument, on their JSON schemas: refused only when
it surely cannot."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter
from typing_extensions import TypedDict

from taskgate.workflow.schemas import ANYTHING, Schema, argument_schema, describe, fits, follow, result_schema

from .tasks import CATALOGUE, Row


class Tree(BaseModel):
    """A recursive model."""

    name: str
    kids: list[Tree] = []


class Strict(BaseModel):
    """A model that refuses other keys."""

    model_config = ConfigDict(extra="forbid")
    id: int


class Loose(BaseModel):
    """A model with Row's id and more."""

    id: int
    name: str
    extra: float = 0.0


class Named(TypedDict):
    name: str


def result(kind: Any) -> Schema:
    return Schema.of(TypeAdapter(kind).json_schema(mode="serialization"))


def argument(kind: Any) -> Schema:
    return Schema.of(TypeAdapter(kind).json_schema())


@pytest.mark.parametrize(("given", "wanted"), [
    (int, int), (int, float), (bool, bool), (None, int | None), (int | None, int), (int, int | str),
    (Any, int), (int, Any), (list[int], list[float]), (list[Any], list[str]), (tuple[int, str], list[int]),
    (dict[str, int], dict[str, float]), (dict[str, Any], Row), (Row, Row), (Row, Strict | Row),
    (Loose, Row), (Row, dict[str, Any]), (Tree, Tree), (list[Tree], list[Tree]),
    (Literal["a", "b"], str), (str, Literal["a"]), (Literal[1, 2], int), (Literal["a"], Literal["a", "b"]),
    (Row, Named), (list[Row], list[Tree]),  # Tree takes Row's name and ignores the rest
])
def test_what_can_fit_passes(given: Any, wanted: Any) -> None:
    assert fits(result(given), argument(wanted))


@pytest.mark.parametrize(("given", "wanted"), [
    (int, str), (float, int), (bool, int), (str, int), (None, int), (int, bool), (list[int], int),
    (int, list[int]), (list[int], list[str]), (dict[str, int], dict[str, str]), (Row, int), (Row, Strict),
    (Loose, Strict), (Strict, Row), (int | None, str), (Row, dict[str, int]),
    (Literal["a"], Literal["b"]), (Literal[1], str), (Named, Strict), (list[Row], list[Strict]),
    (Named, Row),  # a result holds only its declared keys: Row's id is never there
])
def test_what_cannot_fit_is_refused(given: Any, wanted: Any) -> None:
    assert not fits(result(given), argument(wanted))


@pytest.mark.parametrize(("given", "path", "found"), [
    (Row, "id", "integer"), (Row, "tags.0", "string"), (list[Row], "2.name", "string"),
    (dict[str, list[int]], "k.0", "integer"), (tuple[int, str], "1", "string"), (Any, "a.b.0", "any value"),
    (Row | list[int], "0", "integer"), (Row | list[int], "id", "integer"), (Tree, "kids.0.kids.3.name", "string"),
    (dict[str, Any], "a.b", "any value"),
])
def test_a_path_is_followed_through_the_schema(given: Any, path: str, found: str) -> None:
    value = follow(result(given), path.split("."))
    assert value is not None and describe(value) == found


@pytest.mark.parametrize(("given", "path"), [
    (Row, "colour"), (Row, "id.x"), (int, "0"), (list[int], "x"), (tuple[int, str], "2"), (Strict, "x"),
    (str | None, "a"),
])
def test_a_path_that_cannot_be_there_is_none(given: Any, path: str) -> None:
    assert follow(result(given), path.split(".")) is None


def test_describe_names_types_shortly() -> None:
    assert describe(result(list[Row])) == "list of object Row"
    assert describe(result(int | None)) == "integer or null"
    assert describe(result(Literal["a", "b"])) == "'a' or 'b'"
    assert describe(ANYTHING) == describe(result(Any)) == "any value"


def test_what_a_schema_does_not_say_is_not_judged() -> None:
    assert fits(Schema({"type": "thing"}, {}), argument(int)) is False  # an unknown type is not one it takes
    assert fits(Schema({"$ref": "#/elsewhere"}, {}), argument(int))
    assert fits(Schema({"not": {"type": "integer"}}, {}), argument(int))
    assert fits(Schema({"allOf": [{"type": "string"}, {"minLength": 2}]}, {}), argument(int))
    assert not fits(result(str), Schema({"allOf": [{"type": "integer"}, {"minimum": 0}]}, {}))
    assert fits(result(int), argument_schema(CATALOGUE["wf_keep"], "value"))  # {"title": "Value"}: Any
    assert fits(result_schema(CATALOGUE["wf_anything"]), argument(int))

"""References replaced by results where a node runs: whole results, paths into objects and
lists, a map's items; a clear ``ValueError`` when the actual result lacks the path."""

from __future__ import annotations

from typing import Any

import pytest

from taskgate.workflow.resolve import as_reference, item_of, references, resolve, value_at
from taskgate.workflow.spec import Ref

RESULTS: dict[str, Any] = {
    "fetch": {"rows": [{"id": 7, "tags": ["a", "b"]}, {"id": 8, "tags": []}], "10": "ten"},
    "count": 3,
    "each": [2, 4, 6],
    "none": None,
}


def test_references_are_replaced_by_their_results_at_their_paths() -> None:
    arguments = {"whole": {"$result": "fetch"}, "id": {"$result": "fetch", "path": "rows.1.id"},
                 "tag": {"$result": "fetch", "path": "rows.0.tags.1"}, "key": {"$result": "fetch", "path": "10"},
                 "items": {"$result": "each"}, "n": {"$result": "none"}, "plain": {"x": [1]}, "k": 5}
    resolved = resolve(arguments, RESULTS)
    assert resolved == {"whole": RESULTS["fetch"], "id": 8, "tag": "b", "key": "ten", "items": [2, 4, 6],
                        "n": None, "plain": {"x": [1]}, "k": 5}
    assert arguments["id"] == {"$result": "fetch", "path": "rows.1.id"}  # pure: the template is kept
    resolved["whole"]["rows"].clear()  # a copy: the result held elsewhere is not changed
    assert len(RESULTS["fetch"]["rows"]) == 2
    assert resolve({"ref": Ref.of("count")}, RESULTS) == {"ref": 3}


@pytest.mark.parametrize(("path", "says"), [
    ("rows.2", "'rows' is a list of 2 items without '2'"),
    ("rows.x", "'rows' is a list of 2 items without 'x'"),
    ("rows.0.id.more", "'rows.0.id' is an integer without 'more'"),
    ("missing", "the result is an object without 'missing'"),
])
def test_a_path_the_actual_result_lacks_is_a_value_error(path: str, says: str) -> None:
    with pytest.raises(ValueError, match="the result of node 'fetch' has no") as caught:
        resolve({"a": {"$result": "fetch", "path": path}}, RESULTS)
    assert says in str(caught.value)
    with pytest.raises(ValueError, match="has no 'x'"):
        value_at(None, Ref.of("none", "x"))


def test_a_result_not_given_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="argument 'a': no result of node 'other' was given"):
        resolve({"a": {"$result": "other"}}, RESULTS)


def test_references_lists_each_one_and_refuses_a_malformed_one() -> None:
    arguments = {"a": {"$result": "fetch"}, "b": 1, "c": {"$result": "each", "path": "0"}, "d": {"x": 1}}
    assert references(arguments) == [Ref.of("fetch"), Ref.of("each", "0")]
    assert as_reference({"x": 1}) is None and as_reference([{"$result": "a"}]) is None
    with pytest.raises(ValueError, match="not a valid reference"):
        as_reference({"$result": "a", "extra": 1})
    with pytest.raises(ValueError, match="not a valid reference"):
        references({"a": {"$result": "a", "path": ""}})


def test_a_map_item_is_taken_by_its_index() -> None:
    assert [item_of(RESULTS["each"], index) for index in range(3)] == [2, 4, 6]
    rows = value_at(RESULTS["fetch"], Ref.of("fetch", "rows"))
    first = item_of(rows, 0)
    first["id"] = 0  # a copy
    assert RESULTS["fetch"]["rows"][0]["id"] == 7
    with pytest.raises(ValueError, match="has 3 items, no item 3"):
        item_of(RESULTS["each"], 3)
    with pytest.raises(ValueError, match="not an integer"):
        item_of(3, 0)

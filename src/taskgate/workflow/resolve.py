"""A node's references replaced by its parents' results, where the node runs (pure).

A node's message carries its arguments as the workflow gave them, references in place
(``{"$result": "fetch", "path": "rows.0"}``, only ever an argument's whole value); the worker
reads the parents' results and calls :func:`resolve` before the task's arguments are
validated. A map node's result is the list of its items' results in order, and a map item
gets its item with :func:`item_of`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .schemas import INDEX, json_type
from .spec import RESULT_KEY, Ref


def as_reference(value: Any) -> Ref | None:
    """``value`` as a reference if it is one (a :class:`Ref`, or its JSON: ``$result`` and an
    optional ``path``, nothing else); ``ValueError`` for a malformed one."""
    if isinstance(value, Ref):
        return value
    if not isinstance(value, Mapping) or RESULT_KEY not in value:
        return None
    try:
        return Ref.model_validate(value)
    except ValidationError as exc:
        raise ValueError(f"not a valid reference: {value!r} ({exc.error_count()} errors: "
                         f"{exc.errors(include_url=False)[0]['msg']})") from None


def references(arguments: Mapping[str, Any]) -> list[Ref]:
    """The references among ``arguments``' values, in order (each parent whose result is due)."""
    return [ref for value in arguments.values() if (ref := as_reference(value)) is not None]


def resolve(arguments: Mapping[str, Any], results: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` with each reference replaced by its node's result in ``results`` (by node
    name; a map node's: the list of its items' results), at its ``path``. The values put in
    are copies (a task changing its argument never changes a result held elsewhere).
    ``ValueError`` when a referenced result is not in ``results`` or has nothing at the path."""
    resolved = dict(arguments)
    for name, value in arguments.items():
        ref = as_reference(value)
        if ref is not None:
            if ref.node not in results:
                raise ValueError(f"argument {name!r}: no result of node {ref.node!r} was given")
            resolved[name] = copy.deepcopy(value_at(results[ref.node], ref))
    return resolved


def value_at(result: Any, ref: Ref) -> Any:
    """The value at ``ref``'s path in ``result`` (the result itself when it has no path): each
    part a key of an object or a decimal index of a list. ``ValueError`` when it is not there."""
    value = result
    for depth, part in enumerate(ref.parts()):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and INDEX.match(part) and int(part) < len(value):
            value = value[int(part)]
        else:
            where = repr(".".join(ref.parts()[:depth])) if depth else "the result"
            raise ValueError(f"the result of node {ref.node!r} has no {ref.path!r}: {where} is "
                             f"{_kind(value)} without {part!r}")
    return value


def item_of(over_value: Any, index: int) -> Any:
    """Item ``index`` (from 0) of the list a map node goes over (its ``over`` reference's value),
    a copy; ``ValueError`` when it is not a list or is shorter."""
    if not isinstance(over_value, list):
        raise ValueError(f"a map goes over a list, not {_kind(over_value)}")
    if not 0 <= index < len(over_value):
        raise ValueError(f"the list a map goes over has {len(over_value)} items, no item {index}")
    return copy.deepcopy(over_value[index])


def _kind(value: Any) -> str:
    """What ``value`` is, in JSON's words."""
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    kind = json_type(value)
    return "null" if kind == "null" else f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"

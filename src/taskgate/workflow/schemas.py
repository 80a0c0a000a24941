"""Whether one node's result can be another's argument: judged on the JSON schemas of the
declared types (the parent task's return type, in the form its result is stored; the child's
argument, as the catalogue publishes it).

The check is practical and **conservative**: it refuses only what surely cannot fit, by
JSON's own types as the one validator (:mod:`taskgate.validation`) judges arguments.

- What says nothing (``Any``, a schema without a type) fits and takes anything.
- An integer fits a number (not a number an integer: a float result is stored as ``2.0``,
  which an integer argument refuses); a boolean fits only a boolean, null only null.
- A union (``anyOf``, ``oneOf``, a list of types) fits if one of its members does; a value
  fits a union if it fits one of its members, ``allOf`` if it fits each.
- Lists and dicts: their items must fit, as a type checker judges them (an empty list aside).
  Objects: a property both declare must fit; a property the argument requires must be one the
  result declares (unless the result is open to other keys), and an argument that forbids
  other keys refuses a result's required property it does not know.
- Enums and constants: refused when no value is shared.
- ``$ref`` is followed through ``$defs`` (a recursive type is taken to fit once it recurs);
  string formats, patterns, bounds and lengths are not judged (the run's validation does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic.errors import PydanticUserError

from ..registry import TaskSpec

#: What makes a schema say something about a value; one without any of them takes anything.
_CONSTRAINING = ("type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const")
#: A path's part that can index a list.
INDEX = re.compile(r"^[0-9]+$")


@dataclass(frozen=True, slots=True)
class Schema:
    """A JSON schema and the ``$defs`` its ``$ref``\\ s point into."""

    body: Mapping[str, Any]
    defs: Mapping[str, Any]

    @classmethod
    def of(cls, document: Mapping[str, Any], body: Mapping[str, Any] | None = None) -> Schema:
        """``body`` (or the whole ``document``) with ``document``'s ``$defs``."""
        return cls(document if body is None else body, document.get("$defs", {}))

    def at(self, body: Any) -> Schema:
        """A schema found inside this one (``true`` or a missing one: anything)."""
        return Schema(body if isinstance(body, Mapping) else {} if body is not False else {"not": {}},
                      self.defs)

    def resolved(self) -> Schema:
        """Through ``$ref`` (to ``#/$defs/<name>``) and a lone ``allOf``; an unknown ``$ref``:
        anything."""
        schema, hops = self, 0
        while hops < 32:
            hops += 1
            ref, all_of = schema.body.get("$ref"), schema.body.get("allOf")
            if isinstance(ref, str):
                name = ref.removeprefix("#/$defs/")
                schema = schema.at(self.defs.get(name, {}) if name != ref else {})
            elif isinstance(all_of, list) and len(all_of) == 1:
                schema = schema.at(all_of[0])
            else:
                return schema
        return schema.at({})

    @property
    def unchecked(self) -> bool:
        """True when this (resolved) schema says nothing about its value."""
        return not any(key in self.body for key in _CONSTRAINING)

    def branches(self) -> list[Schema] | None:
        """The members of a union (``anyOf``, ``oneOf``, or ``type`` listing several), if it is one."""
        for key in ("anyOf", "oneOf"):
            members = self.body.get(key)
            if isinstance(members, list):
                return [self.at(member) for member in members]
        kinds = self.body.get("type")
        if isinstance(kinds, list) and len(kinds) != 1:
            return [self.at({**self.body, "type": kind}) for kind in kinds]
        return None

    def kinds(self) -> set[str] | None:
        """The JSON types this schema allows, if it says (by ``type``, ``const`` or ``enum``)."""
        kinds = self.body.get("type")
        if isinstance(kinds, str):
            return {kinds}
        if isinstance(kinds, list):
            return {str(kind) for kind in kinds}
        values = self.values()
        return None if values is None else {kind for kind, _ in values}

    def values(self) -> list[tuple[str, Any]] | None:
        """The values an ``enum`` or ``const`` allows, each with its JSON type."""
        if "const" in self.body:
            return [(json_type(self.body["const"]), self.body["const"])]
        enum = self.body.get("enum")
        return [(json_type(value), value) for value in enum] if isinstance(enum, list) else None

    def list_of(self) -> Schema:
        """The schema of a list of this schema's values."""
        return Schema({"type": "array", "items": self.body}, self.defs)


ANYTHING = Schema({}, {})


def json_type(value: Any) -> str:
    """The JSON type of a JSON value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def result_schema(spec: TaskSpec) -> Schema:
    """The schema of ``spec``'s result as stored (anything when it has none)."""
    try:
        return Schema.of(spec.result_adapter.json_schema(mode="serialization"))
    except PydanticUserError:  # a type JSON schema cannot describe: not checked
        return ANYTHING


def argument_schema(spec: TaskSpec, name: str) -> Schema:
    """The schema of ``spec``'s argument ``name`` (anything when it has none)."""
    return _argument(_arguments_document(spec), name)


def _arguments_document(spec: TaskSpec) -> Mapping[str, Any]:
    try:
        return spec.args_model.model_json_schema()
    except PydanticUserError:
        return {}


def _argument(document: Mapping[str, Any], name: str) -> Schema:
    return Schema.of(document, document.get("properties", {}).get(name, {}))


class TaskTypes:
    """The schemas of tasks' results and arguments, each made once (making one takes a while:
    a workflow of 1,000 nodes names few tasks, many times)."""

    def __init__(self) -> None:
        self._results: dict[int, tuple[TaskSpec, Schema]] = {}
        self._arguments: dict[int, tuple[TaskSpec, Mapping[str, Any]]] = {}

    def result(self, spec: TaskSpec) -> Schema:
        """:func:`result_schema` of ``spec``."""
        known = self._results.get(id(spec))
        if known is None:
            known = self._results[id(spec)] = (spec, result_schema(spec))  # the spec kept: its id stays its
        return known[1]

    def argument(self, spec: TaskSpec, name: str) -> Schema:
        """:func:`argument_schema` of ``spec``'s ``name``."""
        known = self._arguments.get(id(spec))
        if known is None:
            known = self._arguments[id(spec)] = (spec, _arguments_document(spec))
        return _argument(known[1], name)


def follow(schema: Schema, parts: list[str]) -> Schema | None:
    """The schema of the value at ``parts`` (object keys, list indexes) inside a value of
    ``schema``; None when no such value can be there."""
    for part in parts:
        found = _step(schema, part)
        if found is None:
            return None
        schema = found
    return schema


def _step(schema: Schema, part: str) -> Schema | None:
    schema = schema.resolved()
    if schema.unchecked or "allOf" in schema.body:
        return ANYTHING
    branches = schema.branches()
    if branches is not None:
        found = [step for branch in branches if (step := _step(branch, part)) is not None]
        if len(found) <= 1:
            return found[0] if found else None
        return Schema({"anyOf": [step.body for step in found]}, schema.defs)  # one document's defs
    kinds = schema.kinds() or set()
    body = schema.body
    if "object" in kinds:
        properties = body.get("properties", {})
        extra = body.get("additionalProperties")
        if part in properties:
            return schema.at(properties[part])
        if isinstance(extra, Mapping) or extra is True or ("properties" not in body and extra is None):
            return schema.at(extra)
    if "array" in kinds and INDEX.match(part):
        prefix, items = body.get("prefixItems"), body.get("items")
        if isinstance(prefix, list) and int(part) < len(prefix):
            return schema.at(prefix[int(part)])
        if items is not False and not (isinstance(prefix, list) and items is None):
            return schema.at(items)
    return None


def fits(source: Schema, target: Schema, seen: frozenset[tuple[int, int]] = frozenset()) -> bool:
    """False when no value of ``source`` can be a valid value of ``target``; see the module."""
    source, target = source.resolved(), target.resolved()
    if source.unchecked or target.unchecked or "not" in source.body:
        return True
    pair = (id(source.body), id(target.body))
    if pair in seen:  # a recursive type, met again
        return True
    seen = seen | {pair}
    if "allOf" in source.body:
        return True
    members = source.branches()
    if members is not None:
        return any(fits(member, target, seen) for member in members)
    if "allOf" in target.body:
        return all(fits(source, target.at(member), seen) for member in target.body["allOf"])
    options = target.branches()
    if options is not None:
        return any(fits(source, option, seen) for option in options)
    kinds, wanted = source.kinds(), target.kinds()
    if kinds is None or wanted is None:
        return True
    if not any(kind in wanted or (kind == "integer" and "number" in wanted) for kind in kinds):
        return False
    given, allowed = source.values(), target.values()
    if given is not None and allowed is not None and not any(value in allowed for value in given):
        return False
    if kinds == {"array"}:
        return _items_fit(source, target, seen)
    if kinds == {"object"}:
        return _properties_fit(source, target, seen)
    return True


def _items_fit(source: Schema, target: Schema, seen: frozenset[tuple[int, int]]) -> bool:
    if "prefixItems" in source.body or "prefixItems" in target.body:
        return True  # tuples: not judged
    return fits(source.at(source.body.get("items")), target.at(target.body.get("items")), seen)


def _properties_fit(source: Schema, target: Schema, seen: frozenset[tuple[int, int]]) -> bool:
    given: Mapping[str, Any] = source.body.get("properties", {})
    wanted: Mapping[str, Any] = target.body.get("properties", {})
    given_extra = source.body.get("additionalProperties")
    wanted_extra = target.body.get("additionalProperties")
    closed = "properties" in source.body and not given_extra  # a model's result holds only its fields
    for name, schema in given.items():
        if name in wanted:
            if not fits(source.at(schema), target.at(wanted[name]), seen):
                return False
        elif wanted_extra is False:
            if name in source.body.get("required", ()):
                return False
        elif isinstance(wanted_extra, Mapping) and not fits(source.at(schema), target.at(wanted_extra), seen):
            return False
    for name in target.body.get("required", ()):
        if name not in given:
            if closed:
                return False
            if isinstance(given_extra, Mapping) and not fits(source.at(given_extra),
                                                             target.at(wanted.get(name)), seen):
                return False
    if isinstance(given_extra, Mapping) and isinstance(wanted_extra, Mapping):
        return fits(source.at(given_extra), target.at(wanted_extra), seen)
    return True


def describe(schema: Schema, depth: int = 0) -> str:
    """A short name of ``schema``'s type: ``integer``, ``list of string``, ``Row or null``."""
    schema = schema.resolved()
    if schema.unchecked or depth > 3:
        return "any value"
    members = schema.branches()
    if members is not None:
        return " or ".join(dict.fromkeys(describe(member, depth + 1) for member in members))
    values = schema.values()
    if values is not None:
        return " or ".join(repr(value) for _, value in values[:5]) + (" or ..." if len(values) > 5 else "")
    kinds = schema.kinds() or set()
    if kinds == {"array"}:
        return f"list of {describe(schema.at(schema.body.get('items')), depth + 1)}"
    if kinds == {"object"} and isinstance(schema.body.get("title"), str) and "properties" in schema.body:
        return f"object {schema.body['title']}"
    return " or ".join(sorted(kinds)) or "any value"

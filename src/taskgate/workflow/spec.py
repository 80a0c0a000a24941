"""A workflow as it is submitted: the body of ``POST /workflows`` (and what the Python builder
makes), as Pydantic models.

A workflow is a graph of named **nodes**. A *task node* runs one task with its arguments; a
*map node* runs one task per item of a list another node returned. An argument's whole value
may be a **reference** to another node's result, ``{"$result": "fetch"}`` or
``{"$result": "fetch", "path": "rows.0"}``; ``after`` orders a node after others without
passing data. These models check the shape only; :func:`taskgate.workflow.validate.validate_workflow`
checks the graph against the task catalogue (tasks, arguments, types, cycles).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
)

#: The most nodes a workflow may have.
MAX_NODES = 1000
#: The most items a map node may run (the list it maps over may hold no more).
MAX_MAP_ITEMS = 10_000
#: The key that makes an argument's value a reference.
RESULT_KEY = "$result"

NodeName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")]
"""A node's name: a letter or ``_``, then up to 63 letters, digits, ``_`` or ``-``."""

#: A reference's path: dot-separated parts, each an object's key or a list's decimal index.
Path = Annotated[str, StringConstraints(pattern=r"^[^.]+(\.[^.]+)*$", max_length=1000)]


class Ref(BaseModel):
    """A reference to another node's result, passed as an argument's whole value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: NodeName = Field(alias="$result", title="$result", description=(
        "The node whose result is passed. It becomes one of this node's parents: this node runs "
        "once it has succeeded. A map node's result is the list of its items' results, in order."))
    path: Path | None = Field(default=None, description=(
        "Pass only a part of the result: dot-separated object keys and list indexes "
        "(`rows.0.id`). Absent: the whole result."))

    @classmethod
    def of(cls, node: str, path: str | None = None) -> Ref:
        """The reference to ``node``'s result (at ``path``)."""
        given: dict[str, str] = {RESULT_KEY: node}
        if path is not None:
            given["path"] = path
        return cls.model_validate(given)

    def as_json(self) -> dict[str, str]:
        """The reference as it is written in JSON: ``{"$result": node}`` and ``path`` if any."""
        return {RESULT_KEY: self.node} | ({} if self.path is None else {"path": self.path})

    def parts(self) -> list[str]:
        """The path's parts (none for the whole result)."""
        return [] if self.path is None else self.path.split(".")


def _no_stray_reference(value: Any) -> Any:
    """Refuse what looks like a reference but is not one: ``$result`` beside other keys, or
    deeper than an argument's whole value (it would be passed as it is, unresolved)."""
    if not isinstance(value, Ref) and _holds_result_key(value):
        raise ValueError(f'a reference is {{"{RESULT_KEY}": "<node>"}} with an optional "path", nothing '
                         "else, and only as an argument's whole value")
    return value


def _holds_result_key(value: Any) -> bool:
    if isinstance(value, dict):
        return RESULT_KEY in value or any(_holds_result_key(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_result_key(item) for item in value)
    return False


Argument = Annotated[Ref | Any, Field(union_mode="left_to_right"), AfterValidator(_no_stray_reference)]
"""An argument's value: a reference, or any JSON value the task's argument takes."""

Arguments = Annotated[dict[str, Argument], Field(description=(
    "The task's arguments by name, as `POST /tasks/{name}` takes them; a value may instead be a "
    'reference to another node\'s result, `{"$result": "<node>"}` (with an optional `"path"`). '
    "Checked against the task's arguments before anything runs."))]

After = Annotated[list[NodeName], Field(max_length=MAX_NODES, description=(
    "Nodes that must succeed before this one starts, without passing their results (a node "
    "whose result is referenced is waited for anyway)."))]


class TaskNode(BaseModel):
    """A node that runs one task."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(min_length=1, max_length=200, description="The task's name, as in "
                      "`GET /tasks/catalogue`.")
    arguments: Arguments = {}
    after: After = []


class MapSpec(BaseModel):
    """What a map node runs: one task per item of a list."""

    model_config = ConfigDict(extra="forbid")

    over: Ref = Field(description=(
        "The list to map over: a reference to a node's result (or a part of it by `path`) that "
        f"must be a list of at most {MAX_MAP_ITEMS} items. An empty list runs nothing and gives "
        "`[]`."))
    task: str = Field(min_length=1, max_length=200, description="The task run for each item.")
    argument: str = Field(min_length=1, max_length=200, description=(
        "The task's argument that receives each item."))
    arguments: Arguments = {}


class MapNode(BaseModel):
    """A node that runs a task once per item of a list (fan-out); its result is the list of
    their results in order, which a node after it can take (fan-in)."""

    model_config = ConfigDict(extra="forbid")

    map: MapSpec = Field(description="The list to go over, and the task to run for each item.")
    after: After = []

    @property
    def task(self) -> str:
        """The task each item runs."""
        return self.map.task

    @property
    def arguments(self) -> dict[str, Any]:
        """The arguments every item shares (references included)."""
        return self.map.arguments


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "map" if "map" in value else "task"
    return "map" if isinstance(value, MapNode) else "task"


Node = Annotated[Annotated[TaskNode, Tag("task")] | Annotated[MapNode, Tag("map")], Discriminator(_kind)]
"""A task node, or a map node (an object with ``map``)."""


class WorkflowSpec(BaseModel):
    """A workflow to run: its nodes, and what a failure does."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "name": "report",
        "nodes": {
            "fetch": {"task": "fetch_rows", "arguments": {"url": "https://example.com/rows.json"}},
            "enrich": {"map": {"over": {RESULT_KEY: "fetch"}, "task": "enrich", "argument": "row"}},
            "report": {"task": "report", "arguments": {"items": {RESULT_KEY: "enrich"}}},
        },
        "on_failure": "stop",
    }]})

    name: str = Field(min_length=1, max_length=200, description="A name for people to know it by.")
    nodes: dict[NodeName, Node] = Field(min_length=1, max_length=MAX_NODES, description=(
        f"The nodes by name (1 to {MAX_NODES}). A node starts once every node it references or "
        "names in `after` has succeeded; the graph must have no cycle."))
    on_failure: Literal["stop", "continue"] = Field(default="stop", description=(
        "When a node fails (after its retries) or is cancelled: `stop` skips every node not "
        "started yet (running ones finish); `continue` skips only the nodes that depend on it."))

    def as_json(self) -> dict[str, Any]:
        """The workflow as JSON data, references written as they came (``{"$result": ...}``)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def references_of(node: TaskNode | MapNode) -> dict[str, Ref]:
    """The references among ``node``'s arguments, by argument name (a map's ``over`` is not
    one: see :attr:`MapSpec.over`)."""
    return {name: value for name, value in node.arguments.items() if isinstance(value, Ref)}


def literals_of(node: TaskNode | MapNode) -> dict[str, Any]:
    """``node``'s arguments given as values, not references."""
    return {name: value for name, value in node.arguments.items() if not isinstance(value, Ref)}


def parents_of(node: TaskNode | MapNode) -> list[str]:
    """The nodes ``node`` waits for, in the order first named: ``after``, then its references'
    nodes, then a map's ``over``; each once."""
    named = [*node.after, *(ref.node for ref in references_of(node).values())]
    if isinstance(node, MapNode):
        named.append(node.map.over.node)
    return list(dict.fromkeys(named))

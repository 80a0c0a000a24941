"""A workflow checked before anything runs: :func:`validate_workflow`.

Refused, each as a :class:`~taskgate.FieldError` of one :class:`~taskgate.InvalidArguments`
(a 422 over HTTP), every error found at once (a cycle on its own, once the nodes' names are
known to be right): a node named in ``after``, a reference or a map's ``over`` that the
workflow does not have, or the node itself; a cycle (naming its nodes); a task that does not
exist or that the caller may not submit; a map's ``argument`` its task does not take, or also
given among its ``arguments``; arguments the task's argument model refuses (by the one
validator, :mod:`taskgate.validation`: unknown ones, wrong types, required ones missing, a
reference or the map's item counting as given); a reference whose ``path`` the parent's
declared result cannot have, or whose value cannot fit the argument; a map over a value that
cannot be a list, or whose items cannot fit the map's argument (see
:mod:`taskgate.workflow.schemas` for what "cannot fit" means: only what surely cannot).

An error's ``loc`` is ``(*at, "nodes", <node>, ...)`` then ``("task",)``, ``("after", i)``,
``("arguments", <field>, ...)``, ``("map", "over")``, ``("map", "task")``, ``("map",
"argument")`` or ``("map", "arguments", <field>, ...)``; a cycle's is the node where it was
found; the node is always ``loc[len(at) + 1]``. The message names the node and the field:
``node 'parse', argument 'data': ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .. import validation
from ..exceptions import FieldError, InvalidArguments
from ..registry import TaskSpec
from .graph import CycleError, Graph
from .schemas import Schema, TaskTypes, describe, fits, follow
from .spec import MAX_NODES, MapNode, Ref, TaskNode, WorkflowSpec, literals_of, references_of

Loc = tuple[str | int, ...]
#: Where the workflow is in a request: its body.
BODY: Loc = ("body",)
#: Any list.
_A_LIST = Schema({"type": "array"}, {})


def validate_workflow(spec: WorkflowSpec, catalogue: Mapping[str, TaskSpec], allowed: Callable[[str], bool],
                      at: Loc = BODY) -> Graph:
    """The graph of ``spec`` once it is all valid, its tasks looked up in ``catalogue`` and
    only those ``allowed`` for the caller taken; else :class:`InvalidArguments` (see the module)."""
    if len(spec.nodes) > MAX_NODES:
        raise _refusal([FieldError((*at, "nodes"), f"at most {MAX_NODES} nodes; this workflow has "
                                   f"{len(spec.nodes)}", "too_long")], at)
    errors: list[FieldError] = []
    tasks: dict[str, TaskSpec] = {}
    for name, node in spec.nodes.items():
        where = (*at, "nodes", name)
        errors += _names(name, node, spec, where)
        task = catalogue.get(node.task)
        if task is None or not allowed(node.task):  # not allowed reads as unknown: nothing is told
            errors.append(FieldError((*where, *_map(node), "task"), f"no task named {node.task!r}; GET "
                                     "/tasks/catalogue lists the tasks you can run", "unknown_task"))
        else:
            tasks[name] = task
    if errors:
        raise _refusal(errors, at)
    try:
        graph = Graph.of(spec)
    except CycleError as exc:
        cycle = [str(name) for name in exc.args[1]]
        raise _refusal([FieldError((*at, "nodes", cycle[0]), "these nodes wait for each other in a cycle: "
                                   f"{' -> '.join(cycle)} (each runs after the one before it)",
                                   "workflow_cycle")], at) from None
    types = TaskTypes()
    produces = {name: _produces(node, types.result(tasks[name])) for name, node in spec.nodes.items()}
    for name, node in spec.nodes.items():
        errors += _arguments(node, tasks[name], types, produces, (*at, "nodes", name))
    if errors:
        raise _refusal(errors, at)
    return graph


def _map(node: TaskNode | MapNode) -> Loc:
    return ("map",) if isinstance(node, MapNode) else ()


def _names(name: str, node: TaskNode | MapNode, spec: WorkflowSpec, where: Loc) -> list[FieldError]:
    """Every node ``node`` names is another node of ``spec``."""
    named: list[tuple[Loc, str]] = [(("after", index), parent) for index, parent in enumerate(node.after)]
    named += [((*_map(node), "arguments", field), ref.node) for field, ref in references_of(node).items()]
    if isinstance(node, MapNode):
        named.append((("map", "over"), node.map.over.node))
    errors = []
    for loc, parent in named:
        if parent == name:
            errors.append(FieldError((*where, *loc), "a node cannot wait for itself or take its own result",
                                     "workflow_self_reference"))
        elif parent not in spec.nodes:
            errors.append(FieldError((*where, *loc), f"no node named {parent!r} in this workflow",
                                     "workflow_unknown_node"))
    return errors


def _produces(node: TaskNode | MapNode, result: Schema) -> Schema:
    """The schema of ``node``'s result: its task's ``result``, or for a map node a list of them."""
    return result.list_of() if isinstance(node, MapNode) else result


def _arguments(node: TaskNode | MapNode, task: TaskSpec, types: TaskTypes, produces: Mapping[str, Schema],
               where: Loc) -> list[FieldError]:
    """``node``'s arguments against ``task``'s: literals by the one validator, references and
    a map's items by their declared types."""
    place = (*where, *_map(node), "arguments")
    fields = task.args_model.model_fields
    refs = references_of(node)
    errors = [FieldError((*place, field), "Extra inputs are not permitted", "extra_forbidden")
              for field in refs if field not in fields]
    supplied = set(refs)
    if isinstance(node, MapNode):
        item = node.map.argument
        supplied.add(item)
        if item not in fields:
            takes = ", ".join(repr(field) for field in fields) or "no arguments"
            errors.append(FieldError((*where, "map", "argument"), f"task {task.name!r} has no argument "
                                     f"{item!r} (it takes {takes})", "workflow_unknown_argument"))
        elif item in node.arguments:
            errors.append(FieldError((*place, item), "given twice: each item of the map is passed as "
                                     "this argument", "multiple_values"))
    try:
        validation.arguments(task.args_model, literals_of(node), at=())
    except InvalidArguments as exc:
        errors += [FieldError((*place, *error.loc), error.msg, error.type) for error in exc.errors
                   if not (error.type == "missing" and len(error.loc) == 1 and error.loc[0] in supplied)]
    for field, ref in refs.items():
        if field in fields:
            errors += _reference(ref, produces[ref.node], types.argument(task, field), (*place, field))
    if isinstance(node, MapNode):
        errors += _over(node, task, types, produces[node.map.over.node], (*where, "map", "over"))
    return errors


def _reference(ref: Ref, parent: Schema, wanted: Schema, loc: Loc) -> list[FieldError]:
    value = _at_path(ref, parent, loc)
    if isinstance(value, FieldError):
        return [value]
    if fits(value, wanted):
        return []
    return [FieldError(loc, f"node {ref.node!r} returns {_what(ref, value)}, which cannot fit this "
                       f"argument ({describe(wanted)})", "workflow_result_type")]


def _over(node: MapNode, task: TaskSpec, types: TaskTypes, parent: Schema, loc: Loc) -> list[FieldError]:
    over = node.map.over
    value = _at_path(over, parent, loc)
    if isinstance(value, FieldError):
        return [value]
    if not fits(value, _A_LIST):
        return [FieldError(loc, f"a map goes over a list: node {over.node!r} returns {_what(over, value)}",
                           "workflow_not_a_list")]
    item = node.map.argument
    if item in task.args_model.model_fields:
        wanted = types.argument(task, item)
        if not fits(value, wanted.list_of()):
            return [FieldError(loc, f"node {over.node!r} returns {_what(over, value)}, whose items cannot "
                               f"fit argument {item!r} of task {task.name!r} ({describe(wanted)})",
                               "workflow_result_type")]
    return []


def _at_path(ref: Ref, parent: Schema, loc: Loc) -> Schema | FieldError:
    """The schema of the referenced value, or the error saying the path cannot be there."""
    value = follow(parent, ref.parts())
    if value is None:
        return FieldError(loc, f"the result of node {ref.node!r} ({describe(parent)}) has no "
                          f"{ref.path!r}", "workflow_path")
    return value


def _what(ref: Ref, value: Schema) -> str:
    return describe(value) + ("" if ref.path is None else f" at {ref.path!r}")


# -- messages ---------------------------------------------------------------------------------

def _refusal(errors: list[FieldError], at: Loc) -> InvalidArguments:
    return InvalidArguments(describe_errors(errors, at), errors)


def describe_errors(errors: Iterable[FieldError], at: Loc = BODY) -> str:
    """The errors as one message, each naming its node and field (``node 'parse', argument
    'data': ...``), ``; ``-separated."""
    return "; ".join(_one(error, at) for error in errors)


def _one(error: FieldError, at: Loc) -> str:
    loc = error.loc[len(at):]
    if len(loc) < 2 or loc[0] != "nodes":
        return validation.describe([error])
    node, rest = loc[1], loc[2:]
    if rest[:1] == ("map",) and rest[1:2] != ("arguments",):
        rest = (f"map {rest[1]}",) if len(rest) > 1 else ()
    elif rest[:1] == ("map",):
        rest = rest[1:]
    if not rest:
        return f"node {node!r}: {error.msg}"
    if rest[0] == "arguments" and len(rest) > 1:
        return f"node {node!r}, argument {'.'.join(str(part) for part in rest[1:])!r}: {error.msg}"
    return f"node {node!r}, {rest[0]}: {error.msg}"

"""``taskgate.Workflow``: a workflow built in Python, its edges checked by the type checker.

::

    wf = taskgate.Workflow("report")
    rows = wf.add(fetch_rows, url=url)          # a node; `rows` stands for its result
    enriched = wf.map(enrich, over=rows)        # one run per item of that result
    total = wf.add(report, items=enriched)      # fan-in: the list of their results, in order
    run = await wf.submit(returns=total)        # a WorkflowRun[int]
    print(await run.result(timeout=60))

**Why a reference is typed as the value.** ``wf.add(task, ...)`` returns a :class:`Reference` to
the node's result, which exists only once the workflow runs; but its declared type is the
task's return type (``add(task: DeclaredTask[P, R], ...) -> R``). So passing it on to another
node is checked by mypy exactly as passing the value would be: ``wf.add(total, values=rows)``
type-checks when ``rows``' task returns ``list[int]`` and ``total`` takes ``values: list[int]``,
and is an error when it does not. ``rows[0]`` and ``rows.field`` are references too (a path into
the result, typed as that element or attribute). The price: the type checker also lets you use a
reference as the value itself (``rows + [1]``, ``len(rows)``), which fails at run time. Use a
reference only as an argument of ``add``/``map``, in ``after``, or as ``submit(returns=...)``.

The workflow is submitted as the :class:`~taskgate.workflow.spec.WorkflowSpec` that
``POST /workflows`` takes (:meth:`Workflow.spec` shows it), and validated the same way.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, cast, overload

from pydantic_core import to_jsonable_python

from .. import registry
from ..declare import DeclaredTask
from ..registry import TaskSpec
from .spec import RESULT_KEY, WorkflowSpec

if TYPE_CHECKING:
    from ..gate import Taskgate
    from ..producer.workflow_run import WorkflowRun

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


class Reference:
    """A node's result (or a part of it) before it exists: what :meth:`Workflow.add` and
    :meth:`Workflow.map` return, typed for the type checker as the result itself (see the
    module's docstring). Indexing it (``ref[0]``, ``ref["key"]``) or reading an attribute
    (``ref.total``) gives a reference to that part (a ``path``)."""

    __slots__ = ("_workflow", "node", "path")

    def __init__(self, workflow: Workflow, node: str, path: tuple[str, ...] = ()) -> None:
        self._workflow, self.node, self.path = workflow, node, path

    def __getitem__(self, key: str | int) -> Reference:
        if isinstance(key, bool) or not isinstance(key, str | int) or (isinstance(key, int) and key < 0):
            raise TypeError(f"a path into node {self.node!r}'s result takes object keys and list indexes "
                            f"from 0, not {key!r}")
        if isinstance(key, str) and (not key or "." in key):
            raise ValueError(f"a path part is a key without '.', not {key!r}")
        return Reference(self._workflow, self.node, (*self.path, str(key)))

    def __getattr__(self, name: str) -> Reference:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __iter__(self) -> Iterator[Any]:
        raise TypeError(f"node {self.node!r}'s result does not exist until the workflow runs: pass it "
                        "to wf.add or wf.map (wf.map(task, over=...) runs a task per item)")

    def __repr__(self) -> str:
        where = f" at {'.'.join(self.path)!r}" if self.path else ""
        return f"<result of node {self.node!r}{where}>"

    def as_json(self) -> dict[str, str]:
        """As ``POST /workflows`` writes it: ``{"$result": node}`` and ``path`` if any."""
        return {RESULT_KEY: self.node} | ({"path": ".".join(self.path)} if self.path else {})


class Adder:
    """Adds nodes to a workflow, with a name and ``after`` or without (see :meth:`Workflow.node`)."""

    def __init__(self, workflow: Workflow, name: str | None, after: Iterable[object]) -> None:
        self._workflow, self._name = workflow, name
        self._after: list[object] = [after] if isinstance(after, Reference) else list(after)

    def add(self, task: DeclaredTask[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """A node running ``task`` once with these arguments (as ``task.submit`` takes them; a
        reference passes another node's result, and makes this node wait for it). Returns a
        reference to its result, typed as the result (see the module's docstring)."""
        spec = _spec_of(task)
        try:
            bound = inspect.signature(spec.func).bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {spec.name!r}: {exc}") from None
        arguments = {name: self._workflow._argument(value, f"{spec.name}({name}=...)")
                     for name, value in bound.arguments.items()}
        node = {"task": spec.name, "arguments": arguments}
        return cast(R, self._workflow._put(self._name, spec, node, self._after))

    @overload
    def map(self, task: DeclaredTask[[T], R], /, *, over: list[T]) -> list[R]: ...
    @overload
    def map(self, task: DeclaredTask[..., R], /, *, over: list[Any], argument: str,
            **arguments: Any) -> list[R]: ...
    def map(self, task: DeclaredTask[..., Any], /, *, over: list[Any], argument: str | None = None,
            **arguments: Any) -> list[Any]:
        """A node running ``task`` once per item of ``over`` (a reference to a list result, at
        most 10,000 items), each item passed as ``argument`` (by default the task's only
        required parameter), ``arguments`` shared by every run. Its result is the list of the
        runs' results, in the items' order (``[]`` for an empty list). Typed ``list[R]``; with
        ``argument=`` the item's type is not checked statically (it is at submit)."""
        spec = _spec_of(task)
        if not isinstance(over, Reference):
            raise TypeError(f"map over a node's result (what wf.add or wf.map returned), not {over!r}")
        self._workflow._own(over)
        if argument is None:
            required = [name for name, field in spec.args_model.model_fields.items() if field.is_required()]
            if len(required) != 1:
                raise TypeError(f"task {spec.name!r} has {len(required)} required parameters "
                                f"({', '.join(required) or 'none'}): name the one each item goes to "
                                "with argument=...")
            argument = required[0]
        shared = {name: self._workflow._argument(value, f"{spec.name}({name}=...)")
                  for name, value in arguments.items()}
        node = {"map": {"over": over.as_json(), "task": spec.name, "argument": argument, "arguments": shared}}
        return cast(list[Any], self._workflow._put(self._name, spec, node, self._after))


class Workflow(Adder):
    """A workflow to build node by node and submit (see the module's docstring).

    ``on_failure``: when a node fails (after its retries) or is cancelled, ``"stop"`` skips
    every node not started yet (running ones finish); ``"continue"`` skips only the nodes that
    depend on it. Node names come from the task (``square``, ``square_2``...) unless given
    with :meth:`node`, which also orders a node after others without passing their results.
    """

    def __init__(self, name: str, *, on_failure: Literal["stop", "continue"] = "stop") -> None:
        super().__init__(self, None, ())
        self.name, self.on_failure = name, on_failure
        self._nodes: dict[str, dict[str, Any]] = {}
        self._parents: dict[str, set[str]] = {}
        self._tasks: dict[str, TaskSpec] = {}

    def node(self, name: str | None = None, *, after: Iterable[object] = ()) -> Adder:
        """Name the next node or order it after others: ``wf.node("sum", after=[cleanup]).add(
        total, values=squares)`` (``after`` takes references; ``add``'s own keywords are the
        task's, so these options come first)."""
        return Adder(self, name, after)

    def _own(self, ref: Reference) -> Reference:
        if ref._workflow is not self:
            raise ValueError(f"{ref!r} is a node of another workflow")
        return ref

    def _argument(self, value: Any, where: str) -> Any:
        """An argument as JSON: a reference, or a literal value (a model or a date as the API
        would take it); a reference inside a literal is refused (only a whole value is one)."""
        if isinstance(value, Reference):
            return self._own(value).as_json()
        if _holds_reference(value):
            raise TypeError(f"{where}: a reference must be an argument's whole value, not inside a list "
                            "or dict (a node can build that value and be referenced instead)")
        return to_jsonable_python(value)

    def _put(self, name: str | None, task: TaskSpec, node: dict[str, Any], after: list[object]) -> Reference:
        if name is None:
            name = _fresh(task.name[:58], self._nodes)
        elif not _NODE_NAME.match(name):
            raise ValueError(f"node name {name!r}: a letter or _, then up to 63 letters, digits, _ or -")
        elif name in self._nodes:
            raise ValueError(f"workflow {self.name!r} has a node {name!r} already")
        refs = []
        for ref in after:
            if not isinstance(ref, Reference):
                raise TypeError(f"after= takes references (what wf.add or wf.map returned), not {ref!r}")
            refs.append(self._own(ref).node)
        if refs:
            node["after"] = list(dict.fromkeys(refs))
        self._nodes[name], self._tasks[name] = node, task
        self._parents[name] = {*refs, *_referenced(node)}
        return Reference(self, name)

    @property
    def sinks(self) -> list[str]:
        """The nodes no other node waits for, in the order added."""
        waited = {parent for parents in self._parents.values() for parent in parents}
        return [name for name in self._nodes if name not in waited]

    def spec(self) -> WorkflowSpec:
        """The workflow as ``POST /workflows`` takes it (its shape checked here; the tasks,
        arguments and types at submit)."""
        return WorkflowSpec.model_validate({"name": self.name, "nodes": self._nodes,
                                            "on_failure": self.on_failure})

    @overload
    async def submit(self, *, owner: str | None = None, gate: Taskgate | None = None) -> WorkflowRun[Any]: ...
    @overload
    async def submit(self, *, returns: R, owner: str | None = None,
                     gate: Taskgate | None = None) -> WorkflowRun[R]: ...
    async def submit(self, *, returns: Any = None, owner: str | None = None,
                     gate: Taskgate | None = None) -> WorkflowRun[Any]:
        """Validate the whole workflow (``InvalidArguments`` naming the node and field: nothing
        is queued), record it and queue its first nodes; returns its :class:`WorkflowRun`.

        ``returns``: the workflow's only sink (a reference to it), typing the run's result as
        that node's (``WorkflowRun[int]``); without it ``WorkflowRun[Any]`` (the result is still
        the declared type at run time). ``owner``: as ``with_options(owner=...)``: its quotas
        apply and only it (and admins) can see the workflow over HTTP. ``gate``: the
        :class:`~taskgate.Taskgate` to submit through; by default the one ``task.submit()``
        uses (:meth:`Taskgate.current <taskgate.Taskgate.current>`)."""
        from ..auth import Caller
        from ..gate import Taskgate
        from ..producer import SYSTEM
        from ..producer.workflow_run import WorkflowRun

        sinks = self.sinks
        if returns is not None and (not isinstance(returns, Reference) or returns.path
                                    or [self._own(returns).node] != sinks):
            raise ValueError(f"returns= takes the workflow's only sink, a node's whole result; its sinks "
                             f"are {', '.join(sinks) or 'none'}")
        spec = self.spec()
        chosen = gate or Taskgate.current()
        caller = SYSTEM if owner is None else Caller(owner=owner)
        submitted = await chosen.call(lambda producer: producer.workflows.submit(spec, caller))
        sink = sinks[0] if len(sinks) == 1 else None
        return WorkflowRun(chosen, submitted.workflow_id, submitted.tasks, sink,
                           None if sink is None else self._tasks[sink], caller)


def _spec_of(task: DeclaredTask[Any, Any]) -> TaskSpec:
    from ..exceptions import UnknownTask

    if not isinstance(task, DeclaredTask):
        raise TypeError(f"a workflow runs tasks declared with @taskgate.task (without with_options), "
                        f"not {task!r}")
    if registry.declared(task.spec.name) is not task.spec:  # a built-in whose name a task of yours took
        raise UnknownTask(task.spec.name)
    return task.spec


def _fresh(base: str, taken: dict[str, Any]) -> str:
    if base not in taken:
        return base
    suffix = 2
    while f"{base}_{suffix}" in taken:
        suffix += 1
    return f"{base}_{suffix}"


def _holds_reference(value: Any) -> bool:
    if isinstance(value, Reference):
        return True
    if isinstance(value, dict):
        return any(_holds_reference(item) for item in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_holds_reference(item) for item in value)
    return False


def _referenced(node: dict[str, Any]) -> set[str]:
    body = node.get("map", node)
    found = {value[RESULT_KEY] for value in body.get("arguments", {}).values()
             if isinstance(value, dict) and RESULT_KEY in value}
    if "map" in node:
        found.add(node["map"]["over"][RESULT_KEY])
    return found

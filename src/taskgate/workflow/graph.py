"""A workflow's graph: each node's parents and children, and an order to run them in.

A node's **parents** are the nodes it waits for: those in its ``after``, those its references
name, and a map node's ``over``. Built by :meth:`Graph.of` from a :class:`WorkflowSpec` whose
node names are all known (``validate_workflow`` checks that first, and builds it).
"""

from __future__ import annotations

from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter

from .spec import MapNode, TaskNode, WorkflowSpec, parents_of


class UnknownNode(ValueError):
    """A node names a node the workflow does not have."""


@dataclass(frozen=True, slots=True)
class Graph:
    """The nodes of a workflow and their edges, each list in the spec's order of nodes."""

    spec: WorkflowSpec
    #: Node -> the nodes it waits for (each once).
    parents: dict[str, tuple[str, ...]]
    #: Node -> the nodes waiting for it.
    children: dict[str, tuple[str, ...]]
    #: Every node, each after all its parents.
    order: tuple[str, ...]

    @classmethod
    def of(cls, spec: WorkflowSpec) -> Graph:
        """The graph of ``spec``; :class:`UnknownNode` for a parent ``spec`` does not have,
        ``graphlib.CycleError`` (its ``args[1]``: the nodes of one cycle, the first again at
        the end) for a cycle."""
        names = list(spec.nodes)
        parents = {name: tuple(parents_of(node)) for name, node in spec.nodes.items()}
        for name, named in parents.items():
            for parent in named:
                if parent not in spec.nodes:
                    raise UnknownNode(f"node {name!r} names node {parent!r}, which the workflow "
                                      "does not have")
        children: dict[str, list[str]] = {name: [] for name in names}
        for name in names:
            for parent in parents[name]:
                children[parent].append(name)
        order = tuple(TopologicalSorter(parents).static_order())
        return cls(spec=spec, parents=parents, order=order,
                   children={name: tuple(kids) for name, kids in children.items()})

    @property
    def roots(self) -> tuple[str, ...]:
        """The nodes with no parent: released at submit."""
        return tuple(name for name in self.spec.nodes if not self.parents[name])

    @property
    def sinks(self) -> tuple[str, ...]:
        """The nodes no node waits for."""
        return tuple(name for name in self.spec.nodes if not self.children[name])

    def node(self, name: str) -> TaskNode | MapNode:
        """The node named ``name``."""
        return self.spec.nodes[name]

    def pending(self, name: str) -> int:
        """How many parents ``name`` waits for at the start (its ``n:<node>:pending``)."""
        return len(self.parents[name])

    def descendants(self, name: str) -> set[str]:
        """Every node that waits for ``name``, directly or through others."""
        found: set[str] = set()
        todo = list(self.children[name])
        while todo:
            child = todo.pop()
            if child not in found:
                found.add(child)
                todo.extend(self.children[child])
        return found


__all__ = ["CycleError", "Graph", "UnknownNode"]

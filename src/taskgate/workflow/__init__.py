"""Workflows: a graph of tasks (issue 26).

:mod:`.spec` the submitted workflow's models, :mod:`.graph` its parents, children and order,
:mod:`.validate` the check before anything runs, :mod:`.schemas` whether a result fits an
argument, :mod:`.resolve` references replaced by results where a node runs (not re-exported
here: ``resolve`` would hide its module).
"""

from __future__ import annotations

from .graph import Graph
from .spec import MAX_MAP_ITEMS, MAX_NODES, MapNode, MapSpec, Ref, TaskNode, WorkflowSpec
from .validate import validate_workflow

__all__ = ["MAX_MAP_ITEMS", "MAX_NODES", "Graph", "MapNode", "MapSpec", "Ref", "TaskNode", "WorkflowSpec",
           "validate_workflow"]

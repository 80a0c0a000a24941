"""A workflow node's arguments, resolved where it runs.

A node's message carries its arguments as the workflow gave them, references in place, and
headers naming its workflow, node and (a map node's run) item. Before the task's arguments are
validated, :func:`node_arguments` reads what the references name from Redis: which run each
parent node had (the workflow's hash), then their results (a map node's: every run's, in
order), and puts them in (``workflow.resolve``). A parent's result never changes once it
succeeded, so each process keeps the last ones it decoded (a map's runs all read the same list).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson
from redis import Redis

from ..brokers.message import ITEM_HEADER, NODE_HEADER, WORKFLOW_HEADER
from ..records import keys
from ..workflow.resolve import item_of, references, resolve, value_at
from ..workflow.spec import Ref

#: Decoded results this process keeps, by task id (or a map node's base id and run count).
_CACHE_SIZE = 64
_results: OrderedDict[tuple[str, int], Any] = OrderedDict()


def headers_of(request: Any) -> dict[str, str]:
    """The workflow headers of a Celery request (none for a run outside a workflow)."""
    found = {name: getattr(request, name, None) for name in (WORKFLOW_HEADER, NODE_HEADER, ITEM_HEADER)}
    return {name: value for name, value in found.items() if isinstance(value, str)}


def _result_of(client: Redis, task_id: str, runs: int | None) -> Any:
    """A parent's result: its run's (``runs`` None), or the list of a map node's ``runs`` runs'."""
    key = (task_id, -1 if runs is None else runs)
    if key in _results:
        _results.move_to_end(key)
        return _results[key]
    if runs is None:
        raw = client.hget(keys.record(task_id), "result")
        if raw is None:
            raise ValueError(f"run {task_id} has no result (it has not succeeded, or its record expired)")
        value = orjson.loads(raw)
    else:
        pipe = client.pipeline(transaction=False)
        for i in range(runs):
            pipe.hget(keys.record(f"{task_id}-{i}"), "result")
        value = [None if raw is None else orjson.loads(raw) for raw in pipe.execute()]
    _results[key] = value
    while len(_results) > _CACHE_SIZE:
        _results.popitem(last=False)
    return value


def _texts(values: Any) -> list[str]:
    """Hash fields as text ('' for an absent one)."""
    return [v.decode() if isinstance(v, bytes) else "" if v is None else str(v) for v in values]


def node_arguments(client: Redis, headers: dict[str, str], arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` of the workflow node the ``headers`` name, references resolved and a map
    run's item put in; ``ValueError`` when a result is missing or does not hold what a
    reference asks for (the run then fails: the workflow validated the types it could)."""
    workflow_id, node = headers[WORKFLOW_HEADER], headers[NODE_HEADER]
    workflow = keys.workflow(workflow_id)
    item = headers.get(ITEM_HEADER)
    over: Ref | None = None
    argument = ""
    if item is not None:
        over_node, path, argument = _texts(client.hmget(workflow, f"n:{node}:over", f"n:{node}:path",
                                                        f"n:{node}:argument"))
        over = Ref.of(over_node, path or None)
    parents = list(dict.fromkeys([ref.node for ref in references(arguments)] + ([over.node] if over else [])))
    fields = [f"n:{parent}:{part}" for parent in parents for part in ("task", "template", "items")]
    found = _texts(client.hmget(workflow, fields)) if fields else []
    results: dict[str, Any] = {}
    for i, parent in enumerate(parents):
        task_id, template, items = found[3 * i:3 * i + 3]
        if not task_id:
            raise ValueError(f"workflow {workflow_id} has no node {parent!r} (the workflow expired?)")
        runs = int(items or 0) if template else None
        results[parent] = _result_of(client, task_id, runs)
    resolved = resolve(arguments, results)
    if over is not None:
        resolved[argument] = item_of(value_at(results[over.node], over), int(item or 0))
    return resolved

"""The workflow scripts, run directly against the session's Valkey: the submit script's writes,
and the edges the script ending a run takes (``workflow.lua`` inside ``transition.lua``), read
back with plain commands. Runs are started and ended with the worker's own scripts."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any, get_args

import orjson
import pytest
from redis import Redis

from taskgate.records import keys, scripts, workflows
from taskgate.records.scripts import Scripts
from taskgate.records.workflows import ITEM_ID, ITEM_INDEX, PlannedNode

OWNER = "wf-script-tests"


def lua(name: str) -> str:
    return resources.files("taskgate.records").joinpath("scripts", f"{name}.lua").read_text(encoding="utf-8")


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    made = [*client.scan_iter(match=f"{keys.RECORD_PREFIX}{{wfst-*", count=1000),
            *client.scan_iter(match=f"{keys.WORKFLOW_PREFIX}{{wfst-*", count=1000)]
    if made:
        client.delete(*made)
    client.delete(keys.owner_index(OWNER), keys.owner_workflows(OWNER), keys.inflight(OWNER))
    client.close()


@pytest.fixture
def run(redis: Redis) -> Scripts:
    return Scripts(redis)


class Graph:
    """One test workflow: its id, queue list, and each node's task id."""

    def __init__(self) -> None:
        self.id = f"wfst-{uuid.uuid4()}"
        self.queue = f"wfst-q-{self.id}"
        self.tasks: dict[str, str] = {}

    def node(self, node: str, children: list[str], pending: int, *, over: str | None = None,
             path: str = "") -> PlannedNode:
        task_id = self.tasks[node] = f"wfst-{uuid.uuid4()}"
        if over is not None:
            message = orjson.dumps({"id": ITEM_ID, "tag": ITEM_ID, "item": ITEM_INDEX, "node": node})
        else:
            message = orjson.dumps({"id": task_id, "node": node})
        return PlannedNode(node=node, name="add", task_id=task_id, pending=pending, children=children,
                           message=message, queue=self.queue, lane="", declared="", arguments=b'{"x": 1}',
                           over=over, path=path, argument="row" if over else "")

    def submit(self, run: Scripts, nodes: list[PlannedNode], *, on_failure: str = "stop",
               sink: str | None = None) -> str:
        now = time.time()
        return run(workflows.submit(self.id, name="test", owner=OWNER, on_failure=on_failure, nodes=nodes,
                                    order=[n.node for n in nodes], sink=sink, spec=b"{}", now=now, ttl=60,
                                    failure_ttl=90, horizon=now - 60))


def queued(redis: Redis, graph: Graph) -> list[dict[str, Any]]:
    """The messages pushed to the graph's queue, oldest first."""
    return [orjson.loads(m) for m in reversed(redis.lrange(graph.queue, 0, -1))]


def hash_of(redis: Redis, graph: Graph) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis.hgetall(keys.workflow(graph.id)).items()}


def record(redis: Redis, task_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis.hgetall(keys.record(task_id)).items()}


def end(run: Scripts, task_id: str, outcome: str = "succeeded", result: Any = None) -> None:
    """Start the run and end it as a worker would."""
    assert run(scripts.start(task_id, OWNER, name="add", now=time.time(), ttl=60, max_deliveries=3,
                             node="n1", failure_ttl=90)).verdict == "run"
    if outcome == "succeeded":
        moved = run(scripts.succeeded(task_id, OWNER, now=time.time(), ttl=60, result=orjson.dumps(result)))
    else:
        moved = run(scripts.failed(task_id, OWNER, now=time.time(), ttl=90, error=b'{"type": "E"}'))
    assert moved.changed


def test_submit_records_every_node_and_queues_the_roots_only(redis: Redis, run: Scripts) -> None:
    g = Graph()
    assert g.submit(run, [g.node("a", ["b"], 0), g.node("b", [], 1)], sink="b") == "created"
    assert queued(redis, g) == [{"id": g.tasks["a"], "node": "a"}]
    a, b = record(redis, g.tasks["a"]), record(redis, g.tasks["b"])
    assert (a["state"], a["workflow_id"], a["node"], a["owner"]) == ("queued", g.id, "a", OWNER)
    assert "waiting_for" not in a and "message" not in a, "a pushed run keeps no message"
    assert (b["state"], b["waiting_for"]) == ("queued", "parents")
    assert orjson.loads(b["message"]) == {"id": g.tasks["b"], "node": "b"} and b["queue"] == g.queue
    assert b["args"] == '{"x": 1}'
    wf = hash_of(redis, g)
    assert (wf["state"], wf["left"], wf["nodes"], wf["n:a:state"], wf["n:b:state"], wf["n:b:pending"]) == \
        ("running", "2", "2", "released", "waiting", "1")
    assert redis.zscore(keys.owner_workflows(OWNER), g.id) is not None
    assert redis.zscore(keys.owner_index(OWNER), g.tasks["b"]) is not None
    assert g.submit(run, []) == "exists", "a retried call changes nothing"


def test_a_run_ending_releases_its_child_once_and_the_last_ends_the_workflow(redis: Redis, run: Scripts) -> None:
    g = Graph()
    g.submit(run, [g.node("a", ["b"], 0), g.node("b", [], 1)], sink="b")
    end(run, g.tasks["a"], result=3)
    assert [m["node"] for m in queued(redis, g)] == ["a", "b"]
    b = record(redis, g.tasks["b"])
    assert "waiting_for" not in b and "message" not in b
    assert redis.ttl(keys.record(g.tasks["a"])) == -1, "kept while its workflow runs"
    assert not run(scripts.succeeded(g.tasks["a"], OWNER, now=time.time(), ttl=60, result=b"3")).changed
    assert len(queued(redis, g)) == 2, "a duplicate end releases nothing"
    end(run, g.tasks["b"], result=4)
    wf = hash_of(redis, g)
    assert (wf["state"], wf["left"], wf["n:b:state"]) == ("succeeded", "0", "succeeded")
    assert "finished_at" in wf
    for key in (keys.workflow(g.id), keys.record(g.tasks["a"]), keys.record(g.tasks["b"])):
        assert 0 < redis.ttl(key) <= 60


def test_a_diamond_releases_its_join_after_both_branches(redis: Redis, run: Scripts) -> None:
    g = Graph()
    g.submit(run, [g.node("a", ["b", "c"], 0), g.node("b", ["d"], 1), g.node("c", ["d"], 1),
                   g.node("d", [], 2)])
    end(run, g.tasks["a"], result=1)
    assert [m["node"] for m in queued(redis, g)] == ["a", "b", "c"]
    end(run, g.tasks["b"], result=2)
    assert [m["node"] for m in queued(redis, g)] == ["a", "b", "c"], "d waits for c"
    end(run, g.tasks["c"], result=3)
    assert [m["node"] for m in queued(redis, g)] == ["a", "b", "c", "d"]


def test_a_map_fans_out_one_run_per_item_and_its_sink_follows_the_last(redis: Redis, run: Scripts) -> None:
    g = Graph()
    g.submit(run, [g.node("a", ["m"], 0), g.node("m", ["s"], 1, over="a", path="rows"), g.node("s", [], 1)])
    end(run, g.tasks["a"], result={"rows": [10, 20, 30]})
    items = queued(redis, g)[1:]
    base = g.tasks["m"]
    assert items == [{"id": f"{base}-{i}", "tag": f"{base}-{i}", "item": str(i), "node": "m"} for i in range(3)]
    first = record(redis, f"{base}-0")
    assert (first["state"], first["workflow_id"], first["node"], first["item"]) == ("queued", g.id, "m", "0")
    for i in range(3):
        assert hash_of(redis, g)["n:s:state"] == "waiting"
        end(run, f"{base}-{i}", result=i)
    wf = hash_of(redis, g)
    assert (wf["n:m:state"], wf["n:m:items"], wf["n:m:ok"], wf["n:s:state"]) == ("succeeded", "3", "3", "released")
    assert queued(redis, g)[-1]["node"] == "s"


def test_a_map_over_an_empty_list_succeeds_at_once(redis: Redis, run: Scripts) -> None:
    g = Graph()
    g.submit(run, [g.node("a", ["m"], 0), g.node("m", ["s"], 1, over="a"), g.node("s", [], 1)])
    end(run, g.tasks["a"], result=[])
    wf = hash_of(redis, g)
    assert (wf["n:m:state"], wf["n:m:items"], wf["n:s:state"]) == ("succeeded", "0", "released")


def test_a_map_over_a_non_list_fails_and_stops_the_workflow(redis: Redis, run: Scripts) -> None:
    g = Graph()
    g.submit(run, [g.node("a", ["m"], 0), g.node("m", ["s"], 1, over="a"), g.node("s", [], 1)])
    end(run, g.tasks["a"], result={"x": 1})
    wf = hash_of(redis, g)
    assert (wf["state"], wf["n:m:state"], wf["n:s:state"]) == ("failed", "failed", "skipped")
    assert "not a list" in wf["n:m:error"]
    s = record(redis, g.tasks["s"])
    assert (s["state"], s["skipped"]) == ("cancelled", "node m failed")
    assert "finished_at" in wf


def test_stop_skips_every_waiting_node_and_lets_running_siblings_finish(redis: Redis, run: Scripts) -> None:
    g = Graph()
    g.submit(run, [g.node("a", ["b"], 0), g.node("x", ["y"], 0), g.node("b", [], 1), g.node("y", [], 1)])
    end(run, g.tasks["a"], "failed")
    wf = hash_of(redis, g)
    assert (wf["state"], wf["n:b:state"], wf["n:y:state"], wf["n:x:state"]) == \
        ("failed", "skipped", "skipped", "released")
    assert "finished_at" not in wf, "x still runs"
    end(run, g.tasks["x"], result=1)
    wf = hash_of(redis, g)
    assert (wf["state"], wf["n:x:state"], wf["left"]) == ("failed", "succeeded", "0")
    assert [m["node"] for m in queued(redis, g)] == ["a", "x"], "y never released"


def test_continue_skips_only_what_depends_on_the_failure(redis: Redis, run: Scripts) -> None:
    g = Graph()
    g.submit(run, [g.node("a", ["b"], 0), g.node("x", ["y"], 0), g.node("b", [], 1), g.node("y", [], 1)],
             on_failure="continue")
    end(run, g.tasks["a"], "failed")
    wf = hash_of(redis, g)
    assert (wf["state"], wf["n:b:state"], wf["n:y:state"]) == ("running", "skipped", "waiting")
    end(run, g.tasks["x"], result=1)
    assert [m["node"] for m in queued(redis, g)] == ["a", "x", "y"]
    end(run, g.tasks["y"], result=2)
    wf = hash_of(redis, g)
    assert (wf["state"], wf["failed"], wf["left"]) == ("failed", "1", "0")


def test_the_stored_workflow_reads_back(redis: Redis, run: Scripts) -> None:
    g = Graph()
    g.submit(run, [g.node("a", ["m"], 0), g.node("m", [], 1, over="a")], sink="m")
    end(run, g.tasks["a"], result=[1, 2])
    read = workflows.decode(g.id, redis.hgetall(keys.workflow(g.id)))
    assert read is not None and read.state == "running" and read.sink == "m" and read.order == ("a", "m")
    m = read.nodes["m"]
    assert (m.is_map, m.items, m.left, m.over, m.argument, m.state) == (True, 2, 2, "a", "row", "released")
    assert m.run_ids() == [f"{g.tasks['m']}-0", f"{g.tasks['m']}-1"]
    assert read.nodes["a"].children == ("m",)


def test_workflow_lua_builds_its_keys_and_limits_as_python_does() -> None:
    source = scripts.source("workflow")
    for constant, value in [("WF_PREFIX", keys.WORKFLOW_PREFIX), ("WF_EVENTS_PREFIX", keys.WORKFLOW_EVENTS_PREFIX),
                            ("TASK_INDEX", keys.INDEX), ("TASKS_OF_OWNER_PREFIX", keys.OWNER_INDEX_PREFIX),
                            ("WF_ITEM_ID", ITEM_ID), ("WF_ITEM_IX", ITEM_INDEX)]:
        assert f"local {constant} = '{value}'" in source, constant
    assert f"local WF_MAX_ITEMS = {workflows.MAX_MAP_ITEMS}" in source
    assert "WF_PREFIX .. '{' .. workflow_id .. '}'" in source and keys.workflow("w") == f"{keys.WORKFLOW_PREFIX}{{w}}"
    assert "WF_EVENTS_PREFIX .. '{' .. workflow_id .. '}'" in source
    assert "TASKS_OF_OWNER_PREFIX .. owner" in source and keys.owner_index("o") == f"{keys.OWNER_INDEX_PREFIX}o"
    assert ITEM_ID.isalnum() and ITEM_INDEX.isalnum(), "a plain find and replace in Lua"


def test_the_workflow_scripts_name_only_workflow_and_node_states() -> None:
    found: dict[str, set[str]] = {"workflow": set(), "node": set()}
    for name in ("workflow", "workflow_submit", "workflow_cancel", "workflow_retry"):
        source = lua(name)
        for pattern in (r"wf_state [~=]= '(\w+)'", r"'HSET', wf, 'state', '(\w+)'",
                        r"wf_state = \(f\[6\] == '1' and '(\w+)'\)"):
            found["workflow"] |= set(re.findall(pattern, source))
        for pattern in (r"wf_field\(\w+, 'state'\)\) == '(\w+)'", r"wf_field\(\w+, 'state'\), '(\w+)'",
                        r"wf_node_done\(wf, workflow_id, \w+, '(\w+)'", r"outcome = '(\w+)'"):
            found["node"] |= set(re.findall(pattern, source))
    assert found["workflow"] and found["workflow"] <= set(get_args(workflows.WorkflowState)), found
    assert found["node"] and found["node"] <= set(get_args(workflows.NodeState)), found


def test_every_new_run_is_announced_for_live_lists(redis: Redis, run: Scripts) -> None:
    g = Graph()
    feed = redis.pubsub(ignore_subscribe_messages=True)
    feed.psubscribe(f"{keys.EVENTS_PREFIX}*")
    try:
        g.submit(run, [g.node("a", ["m"], 0), g.node("m", [], 1, over="a")])
        end(run, g.tasks["a"], result=[7, 8])
        seen: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 5
        want = {g.tasks["a"], f"{g.tasks['m']}-0", f"{g.tasks['m']}-1"}
        while not want <= seen.keys() and time.monotonic() < deadline:
            message = feed.get_message(timeout=1)
            if message is not None:
                task_id = keys.task_of_channel(message["channel"].decode())
                seen.setdefault(task_id, orjson.loads(message["data"]))
        assert want <= seen.keys(), "each run's first change is published"
        item = seen[f"{g.tasks['m']}-1"]
        assert (item["state"], item["workflow_id"], item["node"], item["owner"]) == ("queued", g.id, "m", OWNER)
    finally:
        feed.close()

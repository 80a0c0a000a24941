"""Workflows over HTTP against the session's Valkey and real worker: each node runs as an
ordinary task, its parents' results passed in by the worker, each edge taken once."""

from __future__ import annotations

from typing import Any

import httpx


def submit(client: httpx.Client, nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response = client.post("/workflows", json={"name": "test", "nodes": nodes, **extra})
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/workflows/{body['workflow_id']}"
    return body


def ended(client: httpx.Client, task_id: str) -> dict[str, Any]:
    """The task once it ended (the API holds the request until then)."""
    response = client.get(f"/tasks/{task_id}", params={"wait": 20})
    assert response.status_code == 200, response.text
    task = response.json()
    assert task["state"] in ("succeeded", "failed", "cancelled", "expired"), task
    return task


def workflow(client: httpx.Client, workflow_id: str) -> dict[str, Any]:
    response = client.get(f"/workflows/{workflow_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_a_chain_passes_each_result_on(client: httpx.Client) -> None:
    body = submit(client, {
        "sum": {"task": "add", "arguments": {"x": 1, "y": 2}},
        "squared": {"task": "power", "arguments": {"base": {"$result": "sum"}, "exponent": 2}},
    })
    sink = ended(client, body["tasks"]["squared"])
    assert (sink["state"], sink["result"], sink["workflow_id"], sink["node"]) == \
        ("succeeded", 9, body["workflow_id"], "squared")
    seen = workflow(client, body["workflow_id"])
    assert (seen["state"], seen["result"]) == ("succeeded", 9)
    assert {name: node["state"] for name, node in seen["nodes"].items()} == {"sum": "succeeded", "squared": "succeeded"}
    assert seen["nodes"]["squared"]["parents"] == ["sum"]


def test_a_map_fans_out_and_its_results_fan_in_in_order(client: httpx.Client) -> None:
    body = submit(client, {
        "count": {"task": "numbers", "arguments": {"count": 5}},
        "squares": {"map": {"over": {"$result": "count"}, "task": "square", "argument": "n"}},
        "sum": {"task": "total", "arguments": {"values": {"$result": "squares"}}},
    })
    assert ended(client, body["tasks"]["sum"])["result"] == 0 + 1 + 4 + 9 + 16
    seen = workflow(client, body["workflow_id"])
    assert seen["state"] == "succeeded"
    assert seen["nodes"]["squares"]["items"] == {"total": 5, "left": 0, "succeeded": 5}
    base = body["tasks"]["squares"]
    assert [ended(client, f"{base}-{i}")["result"] for i in range(5)] == [0, 1, 4, 9, 16]


def test_a_map_sink_gives_the_list_of_its_results(client: httpx.Client) -> None:
    body = submit(client, {
        "count": {"task": "numbers", "arguments": {"count": 3}},
        "squares": {"map": {"over": {"$result": "count"}, "task": "square", "argument": "n"}},
    })
    ended(client, body["tasks"]["count"])  # its end made the map's runs, in the same script
    for i in range(3):
        ended(client, f"{body['tasks']['squares']}-{i}")
    seen = workflow(client, body["workflow_id"])  # the last run's end ended the workflow
    assert (seen["state"], seen["result"]) == ("succeeded", [0, 1, 4])


def test_a_failed_node_stops_the_workflow_and_skips_what_waits(client: httpx.Client) -> None:
    body = submit(client, {
        "bad": {"task": "boom", "arguments": {"message": "no"}},
        "after": {"task": "add", "arguments": {"x": 1, "y": 1}, "after": ["bad"]},
    })
    assert ended(client, body["tasks"]["bad"])["state"] == "failed"
    skipped = ended(client, body["tasks"]["after"])
    assert (skipped["state"], skipped["skipped"]) == ("cancelled", "node bad failed")
    seen = workflow(client, body["workflow_id"])
    assert (seen["state"], seen["nodes"]["after"]["state"]) == ("failed", "skipped")


def test_an_invalid_graph_is_refused_naming_the_node_and_queues_nothing(client: httpx.Client) -> None:
    cycle = client.post("/workflows", json={"name": "c", "nodes": {
        "a": {"task": "add", "arguments": {"x": 1, "y": 1}, "after": ["b"]},
        "b": {"task": "add", "arguments": {"x": 1, "y": 1}, "after": ["a"]}}})
    assert cycle.status_code == 422 and "cycle" in cycle.text, cycle.text
    unknown = client.post("/workflows", json={"name": "u", "nodes": {
        "a": {"task": "add", "arguments": {"x": 1, "y": {"$result": "nowhere"}}}}})
    assert unknown.status_code == 422 and "nowhere" in unknown.text, unknown.text
    typed = client.post("/workflows", json={"name": "t", "nodes": {
        "a": {"task": "numbers", "arguments": {"count": 2}},
        "b": {"task": "add", "arguments": {"x": {"$result": "a"}, "y": 1}}}})
    assert typed.status_code == 422 and "'b'" in typed.text, typed.text


def test_an_unknown_workflow_is_404(client: httpx.Client) -> None:
    response = client.get("/workflows/no-such-workflow")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "workflow_not_found" and "no workflow" in error["message"], error


def test_cancel_skips_what_waits_and_cancels_what_was_queued(client: httpx.Client, tmp_path: Any) -> None:
    started = tmp_path / "started"
    body = submit(client, {
        "slow": {"task": "sleepy", "arguments": {"seconds": 30, "started_file": str(started)}},
        "queued": {"task": "add", "arguments": {"x": 1, "y": 1}, "after": ["slow"]},
    })
    cancelled = client.post(f"/workflows/{body['workflow_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    seen = cancelled.json()
    assert seen["state"] == "cancelled"
    assert seen["nodes"]["queued"]["state"] == "skipped"
    slow = ended(client, body["tasks"]["slow"])
    assert slow["state"] == "cancelled", slow
    seen = workflow(client, body["workflow_id"])
    assert (seen["state"], seen["nodes"]["slow"]["state"]) == ("cancelled", "cancelled")
    assert seen["finished_at"] is not None
    again = client.post(f"/workflows/{body['workflow_id']}/cancel")
    assert again.status_code == 409, again.text


def test_retry_runs_the_failed_and_skipped_nodes_again_with_the_results_kept(client: httpx.Client,
                                                                             tmp_path: Any) -> None:
    counter = tmp_path / "counter"
    log = tmp_path / "log"
    body = submit(client, {
        "count": {"task": "numbers", "arguments": {"count": 3, "log": str(log)}},
        "flaky": {"task": "flaky", "arguments": {"counter": str(counter), "failures": 4}, "after": ["count"]},
        "sum": {"task": "total", "arguments": {"values": {"$result": "count"}}, "after": ["flaky"]},
    })
    assert ended(client, body["tasks"]["flaky"])["state"] == "failed"
    assert ended(client, body["tasks"]["sum"])["skipped"] == "node flaky failed"
    early = client.post(f"/workflows/{body['workflow_id']}/retry")
    assert early.status_code == 202, early.text
    again = early.json()["tasks"]
    assert set(again) == {"flaky", "sum"} and again["flaky"] != body["tasks"]["flaky"]
    assert client.post(f"/workflows/{body['workflow_id']}/retry").status_code == 409, "it runs again"
    assert ended(client, again["flaky"])["result"] == 5, "its 5th attempt, the first of the new run"
    assert ended(client, again["sum"])["result"] == 0 + 1 + 2
    seen = workflow(client, body["workflow_id"])
    assert (seen["state"], seen["result"]) == ("succeeded", 3)
    assert seen["nodes"]["count"]["task_id"] == body["tasks"]["count"], "a succeeded node is not run again"
    assert log.read_text().count("numbers 3") == 1
    assert seen["nodes"]["flaky"]["task_id"] == again["flaky"]


def test_a_node_run_shows_the_arguments_it_ran_with(client: httpx.Client) -> None:
    body = submit(client, {
        "count": {"task": "numbers", "arguments": {"count": 2}},
        "squares": {"map": {"over": {"$result": "count"}, "task": "square", "argument": "n",
                            "arguments": {"seconds": 0}}},
        "sum": {"task": "total", "arguments": {"values": {"$result": "squares"}}},
    })
    assert ended(client, body["tasks"]["sum"])["arguments"] == {"values": [0, 1]}
    assert ended(client, f"{body['tasks']['squares']}-1")["arguments"] == {"n": 1, "seconds": 0}


def test_a_result_that_does_not_fit_at_run_time_fails_the_node_with_a_clear_error(client: httpx.Client) -> None:
    body = submit(client, {  # the type fits (an int into an int); the value is out of range
        "big": {"task": "add", "arguments": {"x": 10**12, "y": 0}},
        "primes": {"task": "count_primes", "arguments": {"limit": {"$result": "big"}}},
    })
    failed = ended(client, body["tasks"]["primes"])
    assert failed["state"] == "failed"
    assert failed["error"]["type"] == "InvalidArguments", failed["error"]
    assert "limit" in failed["error"]["message"] and "pydantic.dev" not in failed["error"]["message"]


def test_a_nodes_task_limits_hold_it_in_redis_like_any_run(client: httpx.Client, tmp_path: Any) -> None:
    from ..worker.admitted import events, most_at_once, starts

    log = tmp_path / "runs.log"
    hold = tmp_path / "hold"
    hold.write_text("")
    nodes = {f"n{i}": {"task": "single_slot", "arguments": {"log": str(log), "token": f"t{i}", "hold": str(hold)}}
             for i in range(3)}  # three roots of a task with one slot across the cluster
    body = submit(client, {**nodes, "after": {"task": "add", "arguments": {"x": 1, "y": 1},
                                              "after": ["n0", "n1", "n2"]}})
    waiting = [client.get(f"/tasks/{body['tasks'][f'n{i}']}").json() for i in range(3)]
    assert sorted(task["waiting_for"] or "went" for task in waiting) == ["slot", "slot", "went"], waiting
    hold.unlink()
    assert ended(client, body["tasks"]["after"])["result"] == 2
    assert most_at_once(events(log)) == 1 and starts(log) == {"t0": 1, "t1": 1, "t2": 1}

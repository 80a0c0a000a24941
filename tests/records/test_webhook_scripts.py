"""The webhook outbox in Lua, run directly: ``webhooks.lua`` (inside every script that ends a run
or a workflow) writing one delivery per subscription that takes the event, and the scripts that
keep subscriptions (``webhook_put.lua``, ``webhook_drop.lua``), read back with plain commands.

On a private Valkey for this module, not the session's: the session's workers send every
delivery due in the session's Valkey, and these tests read deliveries exactly as the scripts
wrote them (and count every subscription there is)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any

import orjson
import pytest
from redis import Redis

from taskgate.constants import ANONYMOUS
from taskgate.records import keys, scripts, webhooks, workflows
from taskgate.records.scripts import Scripts
from taskgate.records.webhooks import Subscription
from taskgate.records.workflows import PlannedNode

from ..helpers import start_valkey

OWNER = "wh-script-tests"


@pytest.fixture(scope="module")
def private_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = start_valkey(tmp_path_factory.mktemp("webhook-valkey"))
    yield f"{server.connection_url}/0"
    server.stop()


@pytest.fixture
def redis(private_url: str) -> Iterator[Redis]:
    client = Redis.from_url(private_url)
    client.flushdb()  # a server of this module's own
    yield client
    client.close()


@pytest.fixture
def run(redis: Redis) -> Scripts:
    return Scripts(redis)


def lua(name: str) -> str:
    return resources.files("taskgate.records").joinpath("scripts", f"{name}.lua").read_text(encoding="utf-8")


def subscribe(run: Scripts, events: list[str], *, owner: str | None = OWNER, tasks: list[str] | None = None,
              all_owners: bool = False, enabled: bool = True) -> str:
    sub = Subscription(webhook_id=webhooks.new_id(), url="https://example.com/hook", events=tuple(events),
                       tasks=None if tasks is None else tuple(tasks), owner=owner, all_owners=all_owners,
                       enabled=enabled, secret=webhooks.new_secret())
    assert run(webhooks.put(sub.webhook_id, owner, mode="create", limit=webhooks.MAX_PER_OWNER,
                            fields=webhooks.fields_of(sub))) == "created"
    return sub.webhook_id


def end_run(run: Scripts, name: str = "add", *, owner: str = OWNER, outcome: str = "succeeded") -> str:
    """A run of ``name`` submitted, started and ended as a worker would: its id."""
    task_id = f"whst-{uuid.uuid4()}"
    now = time.time()
    run(scripts.submit(scripts.Enqueue(task_id, name, now=now, owner=owner, ttl=60, horizon=now - 60,
                                       message=b"m", queue=f"q-{task_id}", due=None, idempotency=None,
                                       digest="", rate_limit=0, inflight_limit=0, deadline=None,
                                       idempotency_ttl=60)))
    assert run(scripts.start(task_id, owner, name=name, now=now, ttl=60, max_deliveries=3, node="n1",
                             failure_ttl=90)).verdict == "run"
    if outcome == "succeeded":
        moved = run(scripts.succeeded(task_id, owner, now=time.time(), ttl=60, result=b"3"))
    else:
        moved = run(scripts.failed(task_id, owner, now=time.time(), ttl=90, error=b'{"type": "E"}'))
    assert moved.changed
    return task_id


def deliveries(redis: Redis) -> dict[str, dict[str, str]]:
    """Every delivery there is, by its id (``<subscription id>:<msg id>``)."""
    found = {}
    for key in redis.scan_iter(match=f"{keys.DELIVERY_PREFIX}*", count=1000):
        found[key.decode().removeprefix(keys.DELIVERY_PREFIX)[1:-1]] = {
            k.decode(): v.decode() for k, v in redis.hgetall(key).items()}
    return found


# --- the sources --------------------------------------------------------------------------------

def test_webhooks_lua_builds_its_keys_and_ids_as_python_does() -> None:
    source = lua("webhooks")
    for constant, value in [("WH_PREFIX", keys.WEBHOOK_PREFIX), ("WH_OF_OWNER_PREFIX", keys.WEBHOOKS_OF_PREFIX),
                            ("WH_ALL", keys.WEBHOOKS_ALL), ("WH_COUNT", keys.WEBHOOKS_COUNT),
                            ("WH_DELIVERY_PREFIX", keys.DELIVERY_PREFIX), ("WH_DUE", keys.WEBHOOK_DUE), ("WH_WAKE", keys.WEBHOOK_WAKE),
                            ("WH_DELIVERIES_PREFIX", keys.DELIVERIES_OF_PREFIX), ("WH_ANONYMOUS", ANONYMOUS)]:
        assert re.search(rf"^local {constant} = '{re.escape(value)}'(  --.*)?$", source, re.MULTILINE), constant
    assert f"local WH_DELIVERIES_KEPT = {webhooks.DELIVERIES_KEPT}  --" in source
    summary = ", ".join(f"'{name}'" for name in workflows.SUMMARY_FIELDS)
    assert f"local WH_WF_SUMMARY = {{{summary}}}\n" in source
    assert "WH_PREFIX .. '{' .. id .. '}'" in source and keys.webhook("w") == f"{keys.WEBHOOK_PREFIX}{{w}}"
    assert "WH_OF_OWNER_PREFIX .. (owner or WH_ANONYMOUS)" in source
    assert keys.webhooks_of("o") == f"{keys.WEBHOOKS_OF_PREFIX}o"
    assert "WH_DELIVERY_PREFIX .. '{' .. id .. ':' .. msg_id .. '}'" in source
    assert keys.delivery(webhooks.delivery_id("w", "m")) == f"{keys.DELIVERY_PREFIX}{{w:m}}"
    assert "WH_DELIVERIES_PREFIX .. '{' .. id .. '}'" in source
    assert keys.deliveries_of("w") == f"{keys.DELIVERIES_OF_PREFIX}{{w}}"
    assert "'msg_' .. task_id .. '_' .. state" in source and webhooks.task_msg_id("t", "failed") == "msg_t_failed"
    assert "'msg_' .. workflow_id .. '_' .. retries .. '_' .. state" in source
    assert webhooks.workflow_msg_id("w", "failed", 2) == "msg_w_2_failed"
    assert webhooks.workflow_msg_id("w", "failed") == "msg_w_failed"
    # the events matched: each family's names and its '*', as records.webhooks.EVENTS
    assert "pattern == kind or pattern == family .. '.*'" in source
    assert {event.split(".")[0] for event in webhooks.EVENTS} == {"task", "workflow"}


def test_every_script_ending_runs_or_workflows_writes_the_outbox() -> None:
    assert "--#include webhooks.lua" in lua("workflow")
    for name in scripts.NAMES:
        text = scripts.source(name)
        if "local function publish()" in text or "local function wf_finish(" in text:
            assert "local function wh_task_ended(" in text, name
    assert re.search(r"if ENDED\[state\] and not ENDED\[before\] then wh_task_ended\(", lua("transition"))
    assert "wh_workflow_ended(wf, workflow_id, wf_state)" in lua("workflow")


# --- a run's end --------------------------------------------------------------------------------

def test_a_run_ending_writes_one_delivery_per_subscription_taking_it(redis: Redis, run: Scripts) -> None:
    everything = subscribe(run, ["task.*"])
    failures = subscribe(run, ["task.failed"])
    other_task = subscribe(run, ["task.succeeded"], tasks=["other"])
    this_task = subscribe(run, ["task.succeeded", "task.failed"], tasks=["other", "add"])
    workflows_only = subscribe(run, ["workflow.*"])
    paused = subscribe(run, ["task.*"], enabled=False)
    someone_else = subscribe(run, ["task.*"], owner="someone-else")
    admin_all = subscribe(run, ["task.succeeded"], owner="ops", all_owners=True)
    admin_own = subscribe(run, ["task.*"], owner="ops")
    assert redis.get(keys.WEBHOOKS_COUNT) == b"9"

    task_id = end_run(run)
    found = deliveries(redis)
    msg_id = webhooks.task_msg_id(task_id, "succeeded")
    assert set(found) == {webhooks.delivery_id(sub, msg_id) for sub in (everything, this_task, admin_all)}
    assert {failures, other_task, workflows_only, paused, someone_else, admin_own}.isdisjoint(
        d["webhook"] for d in found.values())
    record = {k.decode(): v.decode() for k, v in redis.hgetall(keys.record(task_id)).items()}
    for delivery_id, delivery in found.items():
        assert (delivery["msg_id"], delivery["type"], delivery["state"], delivery["attempts"]) == (
            msg_id, "task.succeeded", "pending", "0")
        assert delivery["next_at"] == delivery["created_at"]
        payload = orjson.loads(delivery["payload"])
        assert {k: v for k, v in payload.items() if k != "timeline"} == {
            k: v for k, v in record.items() if k != "message"}, "the record as published"
        assert [entry["state"] for entry in orjson.loads(payload["timeline"])] == ["queued", "started", "succeeded"]
        assert (payload["state"], payload["result"], payload["owner"]) == ("succeeded", "3", OWNER)
        key = keys.delivery(delivery_id)
        assert redis.zscore(keys.WEBHOOK_DUE, key) == int(delivery["next_at"]), "due now"
        assert redis.zscore(keys.deliveries_of(delivery["webhook"]), key) == int(delivery["created_at"])
        assert redis.ttl(key) == -1, "kept until it is sent"

    failed_id = end_run(run, outcome="failed")
    types = {d["webhook"]: d["type"] for d in deliveries(redis).values() if d["msg_id"].startswith(f"msg_{failed_id}")}
    assert types == {everything: "task.failed", failures: "task.failed", this_task: "task.failed"}


def test_a_delivery_due_while_none_was_wakes_the_deliverers(redis: Redis, run: Scripts) -> None:
    """One PUBLISH on WEBHOOK_WAKE when the due set had nothing due; none while some are due
    (the deliverers are claiming then), and none for a run nobody subscribes to."""
    subscribe(run, ["task.succeeded"])
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.WEBHOOK_WAKE)
    assert pubsub.get_message(timeout=1) is None  # the subscription's confirmation, skipped

    def wakes() -> int:
        count = 0
        while pubsub.get_message(timeout=0.2) is not None:
            count += 1
        return count

    end_run(run, "nobody-cares", outcome="failed")
    assert wakes() == 0
    end_run(run)
    assert wakes() == 1, "the first delivery due"
    end_run(run)
    end_run(run)
    assert wakes() == 0, "the first is still due: nobody sleeps"
    due = [member for member, _ in redis.zrange(keys.WEBHOOK_DUE, 0, -1, withscores=True)]
    redis.zadd(keys.WEBHOOK_DUE, dict.fromkeys(due, time.time() * 1000 + 60_000))  # all claimed, leased
    end_run(run)
    assert wakes() == 1, "nothing due but leases: the deliverers may be asleep"
    pubsub.close()


def test_a_run_without_subscribers_writes_nothing(redis: Redis, run: Scripts) -> None:
    end_run(run)
    assert deliveries(redis) == {} and redis.zcard(keys.WEBHOOK_DUE) == 0
    subscribe(run, ["task.*"], owner="another-owner")
    end_run(run)
    assert deliveries(redis) == {}, "another owner's subscription hears none of these runs"


def test_the_count_gates_the_outbox(redis: Redis, run: Scripts) -> None:
    subscribe(run, ["task.*"])
    redis.set(keys.WEBHOOKS_COUNT, 0)  # as when nobody subscribes: the end reads nothing else
    end_run(run)
    assert deliveries(redis) == {}
    redis.set(keys.WEBHOOKS_COUNT, 1)
    end_run(run)
    assert len(deliveries(redis)) == 1


def test_a_duplicate_end_leaves_the_delivery_as_it_is(redis: Redis, run: Scripts) -> None:
    sub = subscribe(run, ["task.*"])
    task_id = end_run(run)
    delivery_key = keys.delivery(webhooks.delivery_id(sub, webhooks.task_msg_id(task_id, "succeeded")))
    redis.hset(delivery_key, mapping={"state": "delivered", "attempts": 2, "payload": "{}"})
    redis.zrem(keys.WEBHOOK_DUE, delivery_key)
    assert not run(scripts.succeeded(task_id, OWNER, now=time.time(), ttl=60, result=b"4")).changed
    redis.hset(keys.record(task_id), "state", "started")  # a run ending twice, past the guards
    assert run(scripts.succeeded(task_id, OWNER, now=time.time(), ttl=60, result=b"4")).changed
    assert len(deliveries(redis)) == 1
    after = {k.decode(): v.decode() for k, v in redis.hgetall(delivery_key).items()}
    assert (after["state"], after["attempts"], after["payload"]) == ("delivered", "2", "{}")
    assert redis.zscore(keys.WEBHOOK_DUE, delivery_key) is None


def test_the_anonymous_owner_is_heard_by_its_own_set(redis: Redis, run: Scripts) -> None:
    sub = subscribe(run, ["task.succeeded"], owner=None)
    assert redis.sismember(keys.webhooks_of(ANONYMOUS), sub)
    end_run(run, owner=ANONYMOUS)
    assert [d["webhook"] for d in deliveries(redis).values()] == [sub]


# --- a workflow's end ---------------------------------------------------------------------------

def submit_workflow(run: Scripts, workflow_id: str, nodes: list[tuple[str, list[str], int]],
                    traceparent: str = "") -> dict[str, str]:
    """A workflow of add nodes (name, children, parents): each node's task id. ``traceparent``:
    its submit's span (submitted traced)."""
    tasks = {node: f"whst-{uuid.uuid4()}" for node, _, _ in nodes}
    planned = [PlannedNode(node=node, name="add", task_id=tasks[node], pending=pending, children=children,
                           message=orjson.dumps({"id": tasks[node]}), queue=f"q-{workflow_id}", lane="",
                           declared="") for node, children, pending in nodes]
    now = time.time()
    assert run(workflows.submit(workflow_id, name="flow", owner=OWNER, on_failure="stop", nodes=planned,
                                order=[n.node for n in planned], sink=None, spec=b"{}", now=now, ttl=60,
                                failure_ttl=90, horizon=now - 60, traceparent=traceparent)) == "created"
    return tasks


def end_node(run: Scripts, task_id: str) -> None:
    assert run(scripts.start(task_id, OWNER, name="add", now=time.time(), ttl=60, max_deliveries=3,
                             node="n1", failure_ttl=90)).verdict == "run"
    assert run(scripts.succeeded(task_id, OWNER, now=time.time(), ttl=60, result=b"1")).changed


def by_type(redis: Redis) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for delivery in deliveries(redis).values():
        found.setdefault(delivery["type"], []).append(delivery)
    return found


def test_a_workflow_ending_writes_its_event_with_its_summary(redis: Redis, run: Scripts) -> None:
    flows = subscribe(run, ["workflow.succeeded"], tasks=["not-a-node"])  # tasks filter runs only
    runs = subscribe(run, ["task.succeeded"])
    workflow_id = f"whst-{uuid.uuid4()}"
    tasks = submit_workflow(run, workflow_id, [("a", ["b"], 0), ("b", [], 1)])
    end_node(run, tasks["a"])
    assert set(by_type(redis)) == {"task.succeeded"}, "no workflow event before it ends"
    end_node(run, tasks["b"])
    found = by_type(redis)
    assert sorted(d["msg_id"] for d in found["task.succeeded"]) == sorted(
        webhooks.task_msg_id(tasks[node], "succeeded") for node in "ab")
    assert {d["webhook"] for d in found["task.succeeded"]} == {runs}
    [ended] = found["workflow.succeeded"]
    assert (ended["webhook"], ended["msg_id"]) == (flows, webhooks.workflow_msg_id(workflow_id, "succeeded"))
    stored = {k.decode(): v.decode() for k, v in redis.hgetall(keys.workflow(workflow_id)).items()}
    payload = orjson.loads(ended["payload"])
    assert payload == {"workflow_id": workflow_id,
                       **{name: stored[name] for name in workflows.SUMMARY_FIELDS if name in stored}}
    summary = workflows.decode_summary(workflow_id, [payload.get(name) for name in workflows.SUMMARY_FIELDS])
    assert summary is not None and (summary.state, summary.owner, summary.nodes, summary.left) == (
        "succeeded", OWNER, 2, 0)


def test_a_traced_workflow_s_event_keeps_its_submit_span_beside_the_summary(redis: Redis, run: Scripts) -> None:
    """The deliverer links an attempt's span to it; the body sent is the summary alone."""
    subscribe(run, ["workflow.*"])
    workflow_id = f"whst-{uuid.uuid4()}"
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    tasks = submit_workflow(run, workflow_id, [("a", [], 0)], traceparent=traceparent)
    end_node(run, tasks["a"])
    [ended] = by_type(redis)["workflow.succeeded"]
    payload = orjson.loads(ended["payload"])
    assert payload.pop("traceparent") == traceparent
    stored = {k.decode(): v.decode() for k, v in redis.hgetall(keys.workflow(workflow_id)).items()}
    assert payload == {"workflow_id": workflow_id,
                       **{name: stored[name] for name in workflows.SUMMARY_FIELDS if name in stored}}


def test_a_cancelled_workflow_writes_its_event_and_its_skipped_runs_ends(redis: Redis, run: Scripts) -> None:
    everything = subscribe(run, ["task.*", "workflow.*"])
    workflow_id = f"whst-{uuid.uuid4()}"
    tasks = submit_workflow(run, workflow_id, [("a", ["b"], 0), ("b", [], 1)])
    assert run(workflows.cancel(workflow_id)) == "cancelled"
    found = by_type(redis)
    assert [d["msg_id"] for d in found["task.cancelled"]] == [webhooks.task_msg_id(tasks["b"], "cancelled")]
    assert orjson.loads(found["task.cancelled"][0]["payload"])["skipped"] == "workflow cancelled"
    assert "workflow.cancelled" not in found, "a released run is still to end"
    run(scripts.cancel(tasks["a"], OWNER, now=time.time(), ttl=60))  # queued: cancelled at once
    found = by_type(redis)
    assert [d["webhook"] for d in found["workflow.cancelled"]] == [everything]
    assert found["workflow.cancelled"][0]["msg_id"] == webhooks.workflow_msg_id(workflow_id, "cancelled")
    assert len(found["task.cancelled"]) == 2


# --- keeping subscriptions ----------------------------------------------------------------------

def test_put_keeps_the_sets_and_the_count_and_refuses_past_the_limit(redis: Redis, run: Scripts) -> None:
    sub = subscribe(run, ["task.*"], owner="ops", all_owners=True)
    assert redis.sismember(keys.webhooks_of("ops"), sub) and redis.sismember(keys.WEBHOOKS_ALL, sub)
    assert redis.sismember(keys.WEBHOOKS, sub) and redis.get(keys.WEBHOOKS_COUNT) == b"1"
    fields = {"url": "https://example.com/2", "events": '["task.*"]', "secret": "s", "enabled": "1"}
    assert run(webhooks.put(sub, "ops", mode="create", fields=fields)) == "#exists"
    assert run(webhooks.put("wh_none", "ops", mode="update", fields=fields)) == "#missing"
    assert run(webhooks.put("wh_next", "ops", mode="create", limit=1, fields=fields)) == "#limit"
    assert not redis.exists(keys.webhook("wh_next")) and redis.get(keys.WEBHOOKS_COUNT) == b"1"
    secret = redis.hget(keys.webhook(sub), "secret")
    redis.hset(keys.webhook(sub), mapping={"disabled_reason": "410", "enabled": "0"})
    assert run(webhooks.put(sub, "ops", mode="rotate", fields={"secret": "new", "enabled": "1"},
                            drop=["disabled_reason"])) == "updated"
    stored = redis.hgetall(keys.webhook(sub))
    assert (stored[b"secret"], stored[b"previous_secret"], stored[b"enabled"]) == (b"new", secret, b"1")
    assert b"disabled_reason" not in stored and stored[b"seq"] == b"2"


def test_drop_hears_nothing_more_and_takes_its_deliveries_off_the_due_set(redis: Redis, run: Scripts) -> None:
    sub = subscribe(run, ["task.*"], owner=OWNER, all_owners=True)
    kept = subscribe(run, ["task.*"])
    end_run(run)
    listed = sorted(run(webhooks.drop(sub, OWNER)) or [])
    assert listed == sorted(keys.delivery(i) for i, d in deliveries(redis).items() if d["webhook"] == sub)
    assert len(listed) == 1 and redis.zscore(keys.WEBHOOK_DUE, listed[0]) is None
    assert redis.zcard(keys.WEBHOOK_DUE) == 1, "another subscription's stays due"
    assert not redis.exists(keys.webhook(sub), keys.deliveries_of(sub))
    for index in (keys.webhooks_of(OWNER), keys.WEBHOOKS_ALL, keys.WEBHOOKS):
        assert not redis.sismember(index, sub)
    assert redis.get(keys.WEBHOOKS_COUNT) == b"1"
    assert run(webhooks.drop(sub, OWNER)) is None
    redis.delete(*listed)
    end_run(run)
    assert {d["webhook"] for d in deliveries(redis).values()} == {kept}

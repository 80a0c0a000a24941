"""Workflows lose no node and run none twice: a worker killed or frozen mid-graph, Valkey
restarted between a parent's end and its children's runs.

Each test owns its Valkey (with an AOF), workers and API (the ``stack`` fixture), and counts
executions in the tasks themselves: ``numbers`` and ``total`` log a line per run, ``square``
and ``lane_square`` a line at the start and one at the end of each run.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

from taskgate.records import keys
from taskgate.records.workers import heartbeats
from taskgate.service.supervisor import port_is_free

from .helpers import Stack, children, env_for, kill, lines, taskgate, wait_for

ITEMS = 20
SECONDS = 0.3  # each square's run: long enough to be caught running, short enough for 20
SUM = sum(n * n for n in range(ITEMS))
#: From a fault to the workflow's end: a dead worker's messages are requeued once its heartbeat
#: (10 s) is gone and they were unacked for 15 s, by a keeper passing every 5 s: about 30 s,
#: and once (a whole parallel run, load 6-8) more than 45 s before the last item ended.
RECOVERY = 60


def fan_out(log: Path, task: str = "square") -> dict[str, Any]:
    """``numbers`` -> a map of ``task`` over its list -> ``total`` of their results."""
    item_arguments: dict[str, Any] = {"log": str(log)}
    if task == "square":
        item_arguments["seconds"] = SECONDS
    return {
        "count": {"task": "numbers", "arguments": {"count": ITEMS, "log": str(log)}},
        "squares": {"map": {"over": {"$result": "count"}, "task": task, "argument": "n",
                            "arguments": item_arguments}},
        "sum": {"task": "total", "arguments": {"values": {"$result": "squares"}, "log": str(log)}},
    }


def submit(client: httpx.Client, nodes: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/workflows", json={"name": "faults", "nodes": nodes})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def ended(client: httpx.Client, workflow_id: str, seconds: float) -> dict[str, Any]:
    """GET /workflows/{id} once it has ended (``finished_at`` set), or fail after ``seconds``."""
    seen: dict[str, Any] = {}

    def done() -> bool:
        nonlocal seen
        response = client.get(f"/workflows/{workflow_id}")
        assert response.status_code == 200, response.text
        seen = response.json()
        return seen["finished_at"] is not None

    wait_for(done, seconds, f"workflow {workflow_id} to end", interval=0.2)
    return seen


def runs(log: Path, task: str) -> tuple[Counter[int], Counter[int]]:
    """How many times each item's run of ``task`` started and ended, by item."""
    starts: Counter[int] = Counter()
    ends: Counter[int] = Counter()
    for line in lines(log):
        kind, name, *rest = line.split()
        if name == task:
            (starts if kind == "start" else ends)[int(rest[0])] += 1
    return starts, ends


def assert_each_node_once(client: httpx.Client, body: dict[str, Any], log: Path, seconds: float,
                          task: str = "square", interrupted: frozenset[int] = frozenset()) -> None:
    """The workflow succeeded with the right sum; every item succeeded; each item's run ended
    once and started once, but for the ``interrupted`` ones (a run killed with its worker starts
    again, so twice); ``numbers`` and ``total`` ran once each."""
    seen = ended(client, body["workflow_id"], seconds)
    assert (seen["state"], seen["result"]) == ("succeeded", SUM), seen
    assert seen["nodes"]["squares"]["items"] == {"total": ITEMS, "left": 0, "succeeded": ITEMS}, seen
    base = body["tasks"]["squares"]
    items = [client.get(f"/tasks/{base}-{i}").json() for i in range(ITEMS)]
    assert [(item["state"], item["result"]) for item in items] == [("succeeded", n * n) for n in range(ITEMS)]
    starts, ends = runs(log, task)
    assert ends == Counter(range(ITEMS)), (
        f"each item's run must end once: ends {dict(ends)} (an item ending twice ran again after its "
        f"run ended: its end was not recorded)")
    expected = Counter({n: 2 if n in interrupted else 1 for n in range(ITEMS)})
    assert starts == expected, (
        f"starts {dict(starts)}: each item starts once, but for the runs the kill interrupted "
        f"({sorted(interrupted)}), which start twice (the killed run wrote its start and not its end, "
        f"the rerun both); any other second start is a run done twice")
    assert [item["attempts"] for item in items] == [expected[n] for n in range(ITEMS)], items
    counted = Counter(line.split()[0] for line in lines(log) if not line.startswith(("start ", "end ")))
    assert counted == {"numbers": 1, "total": 1}, f"numbers and total must run once each: {lines(log)}"


def test_a_killed_worker_loses_no_item_and_runs_none_twice(stack: Stack) -> None:
    """SIGKILL of the whole worker (main and pool) while the map's items run: on a new worker
    every item succeeds, the interrupted ones run again (once), the others and total once."""
    worker = stack.start_worker()
    client = stack.start_api()
    log = stack.tmp / "runs"
    body = submit(client, fan_out(log))

    def running() -> bool:
        starts, ends = runs(log, "square")
        return sum(starts.values()) >= 4 and starts != ends

    wait_for(running, 20, "the map's items to be running")
    for pid in [worker.pid, *children(worker.pid)]:
        kill(pid, signal.SIGKILL)
    worker.wait()
    starts, ends = runs(log, "square")
    interrupted = frozenset(starts - ends)
    assert interrupted, f"the kill interrupted no run (starts {dict(starts)}, ends {dict(ends)})"
    assert sum(ends.values()) < ITEMS, "the items had all ended before the kill"
    stack.start_worker()
    assert_each_node_once(client, body, log, RECOVERY, interrupted=interrupted)


def unended(redis: Redis, body: dict[str, Any]) -> int:
    """How many of the map's items have not ended (their records, read from Redis)."""
    with redis.pipeline(transaction=False) as pipe:
        for i in range(ITEMS):
            pipe.hget(keys.record(f"{body['tasks']['squares']}-{i}"), "state")
        return sum(1 for state in pipe.execute() if state not in (b"succeeded", b"failed", b"cancelled"))


def test_a_frozen_worker_loses_no_item_and_runs_none_twice(stack: Stack) -> None:
    """SIGSTOP of worker A's main process (its pool processes go on) while one of its items
    runs, for longer than the keepers take to find a dead worker (heartbeat 10 s, grace 15 s):
    B runs the other items, the messages A held are requeued and B skips those that ended; A,
    resumed, runs none of them again. Every item ran once, total once."""
    first = stack.start_worker()
    stack.start_worker()
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    log = stack.tmp / "runs"
    body = submit(client, fan_out(log))
    node = f"taskgate-{first.pid}@"

    def running_on_first() -> bool:
        with redis.pipeline(transaction=False) as pipe:
            for i in range(ITEMS):
                pipe.hmget(keys.record(f"{body['tasks']['squares']}-{i}"), ["state", "worker"])
            return any(state == b"started" and (worker or b"").decode().startswith(node)
                       for state, worker in pipe.execute())

    wait_for(running_on_first, 20, "an item to be running on worker A", interval=0.01)
    kill(first.pid, signal.SIGSTOP)
    try:
        # A's messages leave kombu's unacked hash only when a keeper requeues them (A is frozen)
        # and B acks them: nothing is held in Redis any more, and nothing waits in the queue.
        # One message may be out of Redis's reach meanwhile: the one A's last BRPOP had popped
        # but A had not read when it froze (kombu's Redis transport; a loaded machine widens that
        # window). It runs once A resumes, below; every other item ends while A is frozen.
        wait_for(lambda: redis.hlen("unacked") == 0 and redis.llen("celery") == 0
                 and unended(redis, body) <= 1, RECOVERY, "A's messages to be requeued and taken by B",
                 interval=0.2)
    finally:
        kill(first.pid, signal.SIGCONT)
    resumed = time.time()

    def first_holds_nothing() -> bool:
        beats = [beat for name, beat in heartbeats(redis).items() if name.startswith(node)]
        return bool(beats) and beats[0].at > resumed and not beats[0].tags

    wait_for(first_holds_nothing, 20, "worker A, resumed, to say it holds nothing")
    assert_each_node_once(client, body, log, 20)


def test_valkey_restarted_between_a_parent_and_its_children_loses_nothing(stack: Stack) -> None:
    """`numbers` ends on the default queue's worker and fans out to 20 `lane_square` runs on
    `slowlane`, which no worker consumes yet: Valkey is killed (its AOF fsynced) and restarted.
    A worker for `slowlane` then runs each item once, and the reconnected default worker total."""
    stack.start_worker()
    client = stack.start_api()
    redis = Redis.from_url(stack.url)
    log = stack.tmp / "runs"
    body = submit(client, fan_out(log, task="lane_square"))
    wait_for(lambda: redis.llen("slowlane") == ITEMS, 20, "the map's runs to be queued on slowlane")
    seen = client.get(f"/workflows/{body['workflow_id']}").json()
    assert seen["nodes"]["count"]["state"] == "succeeded" and seen["nodes"]["sum"]["state"] == "waiting", seen
    # Every write acknowledged so far is on disk once WAITAOF answers for a later one.
    redis.set("aof-probe", 1)
    assert redis.execute_command("WAITAOF", 1, 0, 5000)[0] == 1
    redis.close()
    assert stack.server is not None
    port = stack.server.port
    stack.server.terminate()  # SIGKILL: no shutdown save
    wait_for(lambda: port_is_free("127.0.0.1", port), 10, "the old server's port to be free")
    stack.start_valkey(port)
    wait_for(lambda: client.get("/readyz").status_code == 200, 20, "the API to reconnect")
    worker_log = stack.tmp / "slowlane.log"
    lane = taskgate(["worker", "--concurrency=2", "--queues=slowlane"], env_for(stack.url, **stack.env),
                    worker_log)
    stack.workers.append(lane)  # the stack kills it at the end
    wait_for(lambda: b" ready." in worker_log.read_bytes() or lane.poll() is not None, 60, "worker ready")
    assert lane.poll() is None, worker_log.read_text()
    assert_each_node_once(client, body, log, 60, task="lane_square")


"""admission.lua through the scripts that use it, against the session Valkey: runs of a limited
task wait in Redis and are pushed, once, when their limits let them go."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from redis import Redis

from taskgate.config import Settings
from taskgate.limits import publish_fair
from taskgate.records import keys, scripts
from taskgate.records.scripts import Scripts

from ..helpers import wait_for


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def run(redis: Redis) -> Scripts:
    return Scripts(redis)


@pytest.fixture
def task(redis: Redis) -> Iterator[str]:
    """A task name of this test's own (its admission keys are its own too)."""
    name = f"adm{uuid.uuid4().hex[:10]}"
    yield name
    redis.hdel(keys.LIMITS_DECLARED, name)
    redis.hdel(keys.LIMITS_OVERRIDE, name)


def submit(run: Scripts, task: str, queue: str, *, declared: str, lane: str = '["",""]',
           owner: str = "alice") -> tuple[str, scripts.SubmitReply]:
    task_id = f"adm-{uuid.uuid4()}"
    reply = run(scripts.submit(scripts.Enqueue(
        task_id, task, now=time.time(), owner=owner, ttl=60, horizon=time.time() - 60,
        message=task_id.encode(), queue=queue, lane=lane, declared=declared)))
    return task_id, reply


def field(redis: Redis, task_id: str, name: str) -> str | None:
    value = redis.hget(keys.record(task_id), name)
    return value.decode() if isinstance(value, bytes) else None


def end(run: Scripts, task_id: str, owner: str = "alice") -> None:
    run.client.hset(keys.record(task_id), "state", "started")  # as its worker started it
    assert run(scripts.succeeded(task_id, owner, now=time.time(), ttl=60, result=b"null")).changed


def pushed(redis: Redis, queue: str) -> list[str]:
    """The ids pushed to ``queue``, first first (the messages here are the ids)."""
    return [item.decode() for item in reversed(redis.lrange(queue, 0, -1))]


def test_a_task_without_limits_is_pushed_at_once(redis: Redis, run: Scripts, task: str) -> None:
    queue = f"q-{task}"
    task_id, reply = submit(run, task, queue, declared="", lane="")
    assert reply.kind == "queued"
    assert pushed(redis, queue) == [task_id]
    assert field(redis, task_id, "waiting_for") is None


def test_concurrency_slots_admit_the_next_run_in_the_script_that_ends_one(
        redis: Redis, run: Scripts, task: str) -> None:
    queue = f"q-{task}"
    ids = [submit(run, task, queue, declared='{"concurrency":2}') for _ in range(5)]
    assert [reply.kind for _, reply in ids] == ["queued", "queued", "waiting", "waiting", "waiting"]
    ids_only = [task_id for task_id, _ in ids]
    assert pushed(redis, queue) == ids_only[:2]
    assert [field(redis, task_id, "waiting_for") for task_id in ids_only[2:]] == ["slot"] * 3
    assert redis.zcard(keys.admission(task, "slots", "")) == 2
    end(run, ids_only[0])
    assert pushed(redis, queue) == ids_only[:3], "the freed slot admitted the first waiting run at once"
    assert field(redis, ids_only[2], "waiting_for") is None
    assert field(redis, ids_only[2], "message") is None, "its message left the record for the queue"
    assert redis.zcard(keys.admission(task, "slots", "")) == 2
    # a waiting run cancelled meanwhile is skipped, never pushed
    run(scripts.cancel(ids_only[3], "alice", now=time.time(), ttl=60))
    end(run, ids_only[1])
    assert pushed(redis, queue) == [*ids_only[:3], ids_only[4]]
    for task_id in ids_only[2:]:
        end(run, task_id)
    assert redis.zcard(keys.admission(task, "slots", "")) == 0
    assert not redis.exists(keys.admission(task, "wait", '["",""]'))


def test_lanes_of_one_key_wait_apart_and_other_keys_are_not_held_up(
        redis: Redis, run: Scripts, task: str) -> None:
    queue = f"q-{task}"
    declared = '{"concurrency":1}'
    a = [submit(run, task, queue, declared=declared, lane='["","a"]', owner="a")[0] for _ in range(3)]
    b, reply = submit(run, task, queue, declared=declared, lane='["","b"]', owner="b")
    assert reply.kind == "queued", "owner b's own slot is free: a's backlog does not delay it"
    assert pushed(redis, queue) == [a[0], b]
    end(run, a[0], owner="a")
    assert pushed(redis, queue) == [a[0], b, a[1]]


def test_a_weighted_key_has_limit_times_its_weight_slots(redis: Redis, run: Scripts, task: str) -> None:
    """Concurrency(limit=2, key="owner", weights={"heavy": 3}): heavy's runs take 6 slots at once,
    light's (not weighted) 2; an override's weights replace the declared ones (false: none)."""
    queue = f"q-{task}"
    declared = orjson.dumps({"concurrency": 2, "weights": {"heavy": 3}}).decode()

    def submit_as(owner: str) -> tuple[str, str]:
        task_id, reply = submit(run, task, queue, declared=declared, lane=f'["","{owner}"]', owner=owner)
        return task_id, reply.kind

    heavy = [submit_as("heavy") for _ in range(8)]
    light = [submit_as("light") for _ in range(4)]
    assert [kind for _, kind in heavy] == ["queued"] * 6 + ["waiting"] * 2
    assert [kind for _, kind in light] == ["queued"] * 2 + ["waiting"] * 2
    assert redis.zcard(keys.admission(task, "slots", "heavy")) == 6
    assert redis.zcard(keys.admission(task, "slots", "light")) == 2
    # an override of the weights (light now 2, heavy 1) applies as slots are freed
    redis.hset(keys.LIMITS_OVERRIDE, task, orjson.dumps({"weights": {"light": 2}}))
    end(run, light[0][0], owner="light")
    assert pushed(redis, queue)[-2:] == [light[2][0], light[3][0]], "light has 4 slots now: both waiting go"
    end(run, heavy[0][0], owner="heavy")
    assert field(redis, heavy[6][0], "waiting_for") == "slot", "heavy's 5 running fill its 2 slots now"
    redis.hset(keys.LIMITS_OVERRIDE, task, orjson.dumps({"weights": False, "concurrency": 10}))
    end(run, heavy[1][0], owner="heavy")
    assert field(redis, heavy[7][0], "waiting_for") is None, "10 slots, no weights: heavy's last went"


def test_a_rate_limit_spaces_runs_and_the_keeper_admits_them_when_due(
        redis: Redis, run: Scripts, task: str) -> None:
    queue = f"q-{task}"
    declared = orjson.dumps({"rate": [10, 1000, 2]}).decode()  # 10/s, bursts of 2
    ids = [submit(run, task, queue, declared=declared)[0] for _ in range(5)]
    assert pushed(redis, queue) == ids[:2], "the burst goes at once"
    assert field(redis, ids[2], "waiting_for") == "rate"
    member = orjson.dumps([task, '["",""]']).decode()
    due = redis.zscore(keys.ADMIT_DUE, member)
    assert due is not None
    began = time.monotonic()

    def admitted_all() -> bool:
        admitted, wait = run(scripts.admit(100))
        assert wait is None or wait <= 0.1, "the next lane is due within a 10/s interval"
        return len(pushed(redis, queue)) == 5

    wait_for(admitted_all, 5, "the keeper admitting the runs as their rate lets them")
    took = time.monotonic() - began
    assert 0.2 <= took < 2, f"3 runs at 10/s after a burst take about 0.3 s, not {took:.2f} s"
    assert pushed(redis, queue) == ids
    redis.zrem(keys.ADMIT_DUE, member)


def test_a_runtime_override_replaces_the_declared_limit_and_false_removes_it(
        redis: Redis, run: Scripts, task: str) -> None:
    queue = f"q-{task}"
    redis.hset(keys.LIMITS_OVERRIDE, task, '{"concurrency":1}')
    ids = [submit(run, task, queue, declared='{"concurrency":3}')[0] for _ in range(3)]
    assert pushed(redis, queue) == ids[:1]
    redis.hset(keys.LIMITS_OVERRIDE, task, '{"concurrency":false}')
    end(run, ids[0])
    assert pushed(redis, queue) == ids, "with no limit left, every waiting run goes"


def test_a_faster_rate_override_lets_runs_waiting_under_the_slower_one_go(
        redis: Redis, run: Scripts, task: str) -> None:
    """The bucket's stored time, an hour ahead under 1/h, is cut to what the new rate can reach
    (a newcomer's PUT /limits from 1/h to 100/s left the waiting runs an hour out)."""
    queue = f"q-{task}"
    ids = [submit(run, task, queue, declared=orjson.dumps({"rate": [1, 3_600_000, 1]}).decode())[0]
           for _ in range(3)]
    assert pushed(redis, queue) == ids[:1]
    member = orjson.dumps([task, '["",""]']).decode()
    assert redis.zscore(keys.ADMIT_DUE, member) > time.time() * 1000 + 3_500_000, "due in an hour"
    redis.hset(keys.LIMITS_OVERRIDE, task, orjson.dumps({"rate": [100, 1000, 10]}))
    redis.zadd(keys.ADMIT_DUE, {member: 0})  # as PUT /limits marks the task's lanes due
    # The old bucket was drained; the new one starts drained too: the next run goes one new
    # interval (10 ms) on, not an hour.
    wait_for(lambda: run(scripts.admit(100)) and pushed(redis, queue) == ids, 5,
             "the runs waiting under 1/h admitted at 100/s")
    redis.zrem(keys.ADMIT_DUE, member)


def test_a_run_cancelled_or_expired_while_it_waits_leaves_its_lanes_list_at_once(
        redis: Redis, run: Scripts, task: str) -> None:
    """GET /limits counts a lane's waiting list: a run cancelled or expired while it waits left
    it only when admission next looked at the lane (a newcomer saw 3 expired runs counted as
    waiting for 25 s)."""
    queue = f"q-{task}"
    declared = orjson.dumps({"concurrency": 1}).decode()
    ids = [submit(run, task, queue, declared=declared)[0] for _ in range(4)]
    wait = keys.admission(task, "wait", '["",""]')
    assert pushed(redis, queue) == ids[:1] and redis.lrange(wait, 0, -1) == [i.encode() for i in ids[1:]]
    assert run(scripts.cancel(ids[2], "alice", now=time.time(), ttl=60)) == "cancelled"
    assert redis.lrange(wait, 0, -1) == [ids[1].encode(), ids[3].encode()]
    redis.hset(keys.record(ids[1]), "expires_at", int(time.time() * 1000) - 1)  # its expiry passed
    assert run(scripts.expire(ids[1], "alice", now=time.time(), ttl=60)).verdict == "expired"
    assert redis.lrange(wait, 0, -1) == [ids[3].encode()]
    end(run, ids[0])
    assert pushed(redis, queue) == [ids[0], ids[3]], "the one left goes when the slot frees"


def test_a_slot_whose_run_holds_it_no_more_is_reclaimed_and_the_next_run_admitted(
        redis: Redis, run: Scripts, task: str) -> None:
    queue = f"q-{task}"
    first, second = (submit(run, task, queue, declared='{"concurrency":1}')[0] for _ in range(2))
    assert pushed(redis, queue) == [first]
    redis.delete(keys.record(first))  # gone outside the scripts (by hand, say): its slot would leak
    assert run(scripts.reclaim(task)) == 1
    assert pushed(redis, queue) == [first, second]
    assert run(scripts.reclaim(task)) == 0, "the run holding the slot now keeps it"


# --- fair queueing by owner (TASKGATE_FAIR_BY=owner) -------------------------------------------

def start(run: Scripts, task_id: str, owner: str) -> str:
    return run(scripts.start(task_id, owner, name="t", now=time.time(), ttl=60, max_deliveries=3,
                             node="n", failure_ttl=60)).verdict


def test_fair_turns_bound_each_owners_runs_in_a_queue_and_start_admits_the_next(own_redis_url: str) -> None:
    redis = Redis.from_url(own_redis_url)
    run = Scripts(redis)
    redis.set(keys.FAIR, 2)
    queue = "q-fair"
    a = [submit(run, "plain", queue, declared="", lane="", owner="a") for _ in range(5)]
    assert [reply.kind for _, reply in a] == ["queued", "queued", "waiting", "waiting", "waiting"]
    a_ids = [task_id for task_id, _ in a]
    assert field(redis, a_ids[2], "waiting_for") == "turn"
    b_id, reply = submit(run, "plain", queue, declared="", lane="", owner="b")
    assert reply.kind == "queued", "owner b's turns are its own: a's backlog does not hold it"
    assert pushed(redis, queue) == [*a_ids[:2], b_id]
    assert start(run, a_ids[0], "a") == "run"
    assert pushed(redis, queue) == [*a_ids[:2], b_id, a_ids[2]], "a's start let a's next run take its turn"
    assert field(redis, a_ids[2], "waiting_for") is None
    # a run that ends before it starts (cancelled) gives its turn back too
    run(scripts.cancel(a_ids[1], "a", now=time.time(), ttl=60))
    assert pushed(redis, queue)[-1] == a_ids[3]
    # a turn held by a run gone outside the scripts is reclaimed
    redis.delete(keys.record(a_ids[2]))
    assert run(scripts.reclaim(keys.fair_group(queue), "turn")) == 1
    assert pushed(redis, queue)[-1] == a_ids[4]
    redis.close()


def test_an_owners_fair_weight_multiplies_its_window(own_redis_url: str) -> None:
    """TASKGATE_FAIR_WEIGHTS (heavy=3), window 2: heavy may have 6 runs in the queue not yet
    started, light (no weight) 2; weights removed, heavy is back to 2."""
    redis = Redis.from_url(own_redis_url)
    run = Scripts(redis)
    redis.hset(keys.FAIR_WEIGHTS, mapping={"stale": 9})
    publish(redis, Settings(redis_url=own_redis_url, fair_by="owner", fair_window=2, fair_weights="heavy=3"))
    assert redis.get(keys.FAIR) == b"2" and redis.hgetall(keys.FAIR_WEIGHTS) == {b"heavy": b"3"}, \
        "a starting worker replaces the weights as a whole"
    queue = "q-fair-weights"
    heavy = [submit(run, "plain", queue, declared="", lane="", owner="heavy") for _ in range(8)]
    light = [submit(run, "plain", queue, declared="", lane="", owner="light") for _ in range(3)]
    assert [reply.kind for _, reply in heavy] == ["queued"] * 6 + ["waiting"] * 2
    assert [reply.kind for _, reply in light] == ["queued"] * 2 + ["waiting"]
    assert field(redis, heavy[6][0], "waiting_for") == "turn"
    assert start(run, heavy[0][0], "heavy") == "run"
    assert pushed(redis, queue)[-1] == heavy[6][0], "heavy's start let its next run take its turn"
    redis.delete(keys.FAIR_WEIGHTS)
    for task_id, _ in heavy[1:5]:
        assert start(run, task_id, "heavy") == "run"
    assert field(redis, heavy[7][0], "waiting_for") == "turn", "weight 1 again: heavy's 2 in the queue fill it"
    assert start(run, heavy[5][0], "heavy") == "run"
    assert pushed(redis, queue)[-1] == heavy[7][0]
    redis.hset(keys.FAIR_WEIGHTS, mapping={"heavy": 3})
    publish(redis, Settings(redis_url=own_redis_url, fair_by="owner", fair_window=2))
    assert not redis.exists(keys.FAIR_WEIGHTS), "a worker started without weights drops them"
    redis.hset(keys.FAIR_WEIGHTS, mapping={"heavy": 3})
    publish(redis, Settings(redis_url=own_redis_url, fair_weights="heavy=3"))
    assert not redis.exists(keys.FAIR) and not redis.exists(keys.FAIR_WEIGHTS), "fair queueing off: both gone"
    redis.close()


def publish(redis: Redis, settings: Settings) -> None:
    """What a starting worker tells the scripts of fair queueing (:func:`taskgate.limits.publish_fair`)."""
    pipe = redis.pipeline(transaction=False)
    publish_fair(pipe, settings)
    pipe.execute()


def test_a_limited_run_takes_its_task_slot_then_its_fair_turn(own_redis_url: str) -> None:
    redis = Redis.from_url(own_redis_url)
    run = Scripts(redis)
    redis.set(keys.FAIR, 1)
    queue = "q-fair-limited"
    first, reply = submit(run, "lim", queue, declared='{"concurrency":2}', owner="a")
    assert reply.kind == "queued"
    second, reply = submit(run, "lim", queue, declared='{"concurrency":2}', owner="a")
    assert reply.kind == "waiting" and field(redis, second, "waiting_for") == "turn", \
        "its task's limit let it go (2 slots), its owner's turn did not (window 1)"
    assert field(redis, second, "slot") == "", "it holds its task slot while it waits its turn"
    third, _ = submit(run, "lim", queue, declared='{"concurrency":2}', owner="a")
    assert field(redis, third, "waiting_for") == "slot"
    assert start(run, first, "a") == "run"
    assert pushed(redis, queue) == [first, second]
    end(run, first, owner="a")
    assert field(redis, third, "waiting_for") == "turn", "the freed slot admitted it to its fair turn"
    assert start(run, second, "a") == "run"
    assert pushed(redis, queue) == [first, second, third]
    redis.close()


def test_lanes_sharing_a_concurrency_key_take_turns_at_its_slot(redis: Redis, run: Scripts, task: str) -> None:
    """A rate per owner and one slot for the task: while z's run holds the slot, owners a, b, c
    and d wait in four lanes of the one key; each slot freed goes to the next lane in turn, none
    passed over (a lane finding no free slot keeps its turn), so no owner's backlog waits behind
    another's. (Before the fix, a lane visited after the slot was taken lost its turn: with an
    even number of lanes, b and d waited until a and c had run everything.)"""
    queue = f"q-{task}"
    declared = orjson.dumps({"rate": [1000, 1000, 1000], "concurrency": 1}).decode()
    holder, reply = submit(run, task, queue, declared=declared, lane='["z",""]', owner="z")
    assert reply.kind == "queued"
    ids = {owner: [submit(run, task, queue, declared=declared, lane=f'["{owner}",""]', owner=owner)[0]
                   for _ in range(3)] for owner in "abcd"}
    assert all(field(redis, task_id, "waiting_for") == "slot" for owned in ids.values() for task_id in owned)
    order = [holder]
    for _ in range(12):
        end(run, order[-1], owner=field(redis, order[-1], "owner") or "")
        order = pushed(redis, queue)
    assert [field(redis, task_id, "owner") for task_id in order] == ["z", *"abcd" * 3]
    assert order[1:] == [ids[owner][i] for i in range(3) for owner in "abcd"]
    end(run, order[-1], owner="d")
    assert redis.zcard(keys.admission(task, "slots", "")) == 0
    assert redis.llen(keys.admission(task, "ring", "")) == 0, "no lane left in the ring"

"""The schedule scripts (``schedule_put.lua``, ``fire.lua``) run directly against a private
Valkey (the session's worker would fire schedules made in the session's): a tick is claimed
once, a paused, changed or deleted schedule fires nothing, overlap and misses, the limit."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis

from taskgate.records import keys, scripts
from taskgate.records.schedules import decode
from taskgate.records.scripts import Scripts

OWNER = "alice"


@pytest.fixture
def redis(own_redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(own_redis_url)
    yield client
    client.close()


@pytest.fixture
def run(redis: Redis) -> Scripts:
    return Scripts(redis)


def put(run: Scripts, schedule_id: str, *, mode: scripts.PutMode = "create", limit: int = 0,
        next_due: int | None = 1_000, enabled: bool | None = True, **fields: str) -> str:
    return run(scripts.schedule_put(schedule_id, OWNER, mode=mode, limit=limit, now=time.time(),
                                    next_due=next_due, enabled=enabled,
                                    fields={"task": "add", "every": "1.0", **fields}))


def fire(run: Scripts, schedule_id: str, *, expected: int = 1_000, next_due: int = 2_000,
         mode: scripts.FireMode = "fire", last: str | None = None, task_id: str | None = None) -> str:
    new_run = scripts.Enqueue(task_id or str(uuid.uuid4()), "add", now=time.time(), owner=OWNER, ttl=60,
                              horizon=time.time() - 60, message=b"the message", queue="celery")
    return run(scripts.fire(schedule_id, expected=expected, next_due=next_due,
                            tick=expected if mode == "fire" else None, mode=mode, last_task_id=last,
                            run=new_run))


def test_put_creates_indexes_and_refuses_duplicates_missing_and_over_the_limit(redis: Redis, run: Scripts) -> None:
    assert put(run, "s1", limit=2) == "created"
    assert redis.zscore(keys.SCHEDULES_DUE, "s1") == 1_000
    assert redis.zscore(keys.SCHEDULES, "s1") is not None
    assert redis.zscore(keys.owner_schedules(OWNER), "s1") is not None
    assert put(run, "s1") == "#exists"
    assert put(run, "nope", mode="update") == "#missing"
    assert not redis.exists(keys.schedule("nope"))
    assert put(run, "s2", limit=2) == "created"
    assert put(run, "s3", limit=2) == "#limit"
    assert not redis.exists(keys.schedule("s3"))
    assert put(run, "s1", mode="update", next_due=5_000, every="2.0") == "updated"
    assert redis.zscore(keys.SCHEDULES_DUE, "s1") == 5_000
    assert decode("s1", redis.hgetall(keys.schedule("s1"))).every == 2.0


def test_a_tick_fires_once_however_many_keepers_try(redis: Redis, run: Scripts) -> None:
    put(run, "s1")
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert fire(run, "s1", task_id=first) == "fired"
    assert fire(run, "s1", task_id=second) == "taken", "a second keeper that read the same tick"
    assert redis.llen("celery") == 1
    assert not redis.exists(keys.record(second))
    record = {k.decode(): v.decode() for k, v in redis.hgetall(keys.record(first)).items()}
    assert record["schedule_id"] == "s1" and record["tick"] == "1000" and record["state"] == "queued"
    schedule = decode("s1", redis.hgetall(keys.schedule("s1")))
    assert schedule.last_task_id == first and schedule.next_run_at is not None
    assert redis.zscore(keys.SCHEDULES_DUE, "s1") == 2_000
    assert redis.zrange(keys.runs("s1"), 0, -1) == [first.encode()]
    assert fire(run, "s1", expected=2_000, next_due=3_000, task_id=second) == "stale", \
        "a keeper that read the schedule before the last run must read it again"
    assert fire(run, "s1", expected=2_000, next_due=3_000, task_id=second, last=first) == "fired"


def test_paused_changed_or_deleted_schedules_fire_nothing(redis: Redis, run: Scripts) -> None:
    put(run, "s1")
    assert put(run, "s1", mode="update", enabled=False, next_due=None) == "updated"
    assert redis.zscore(keys.SCHEDULES_DUE, "s1") is None
    assert fire(run, "s1") == "taken"
    put(run, "s1", mode="update", enabled=True, next_due=9_000)
    assert fire(run, "s1") == "taken", "changed: the tick read before is not its tick any more"
    redis.delete(keys.schedule("s1"))
    assert fire(run, "s1", expected=9_000) == "taken"
    assert redis.llen("celery") == 0


def test_overlap_skip_waits_for_the_last_run_to_end(redis: Redis, run: Scripts) -> None:
    put(run, "s1", overlap="skip")
    first = str(uuid.uuid4())
    assert fire(run, "s1", task_id=first) == "fired"
    assert fire(run, "s1", expected=2_000, next_due=3_000, last=first) == "overlap"
    assert redis.zscore(keys.SCHEDULES_DUE, "s1") == 3_000, "a skipped tick still moves on"
    redis.hset(keys.record(first), "state", "succeeded")
    assert fire(run, "s1", expected=3_000, next_due=4_000, last=first) == "fired"
    assert decode("s1", redis.hgetall(keys.schedule("s1"))).skipped == 1


def test_a_miss_moves_on_without_a_run_and_a_run_now_ignores_the_tick(redis: Redis, run: Scripts) -> None:
    put(run, "s1")
    assert fire(run, "s1", mode="miss") == "missed"
    assert redis.llen("celery") == 0 and redis.zscore(keys.SCHEDULES_DUE, "s1") == 2_000
    assert decode("s1", redis.hgetall(keys.schedule("s1"))).missed == 1
    now_id = str(uuid.uuid4())
    assert fire(run, "s1", expected=0, mode="now", task_id=now_id) == "fired"
    assert redis.zscore(keys.SCHEDULES_DUE, "s1") == 2_000, "a run now leaves the schedule's next tick"
    assert redis.hget(keys.record(now_id), "tick") is None
    assert redis.hget(keys.record(now_id), "schedule_id") == b"s1"

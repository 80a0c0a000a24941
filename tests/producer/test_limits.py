"""producer.limits against the session Valkey and admission.lua: the lanes a limits change marks
due are the members the scripts look up, and the keys shown are the ones the scripts keep."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import orjson
import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from taskgate.config import Settings
from taskgate.producer.backend import Backend
from taskgate.producer.limits import AdmissionLimits, LimitsChange
from taskgate.records import keys, scripts
from taskgate.records.scripts import AsyncScripts, Scripts
from taskgate.registry import exposed

from .. import helpers, sample_tasks  # noqa: F401  (declares the sample tasks in this process)

T = TypeVar("T")
#: Lane values the due member must escape as Lua's cjson does: "/" (cjson writes "\/"), DEL
#: (cjson writes "\u007f"), control characters, quotes, backslashes, non-ASCII.
AWKWARD = ["", "a/b", "\x7f", "\x00\x01\x1f\t\n", '"\\', "é✓😀\u2028", "<>&'"]


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def task(redis: Redis) -> Iterator[str]:
    name = f"lim{uuid.uuid4().hex[:10]}"
    yield name
    redis.hdel(keys.LIMITS_DECLARED, name)
    redis.hdel(keys.LIMITS_OVERRIDE, name)


def with_limits(redis_url: str, task: str, action: Callable[[AdmissionLimits], Awaitable[T]]) -> T:
    """Run ``action`` on limits whose catalogue has ``task`` (declared as sleepy is: no limits)."""
    async def main() -> T:
        client = AsyncRedis.from_url(redis_url)
        try:
            settings = Settings(redis_url=redis_url, data_dir=helpers.DATA_DIR)  # type: ignore[arg-type]
            return await action(AdmissionLimits(Backend(settings, client, AsyncScripts(client)),
                                                {task: exposed()["sleepy"]}))
        finally:
            await client.aclose()
    return asyncio.run(main())


def submit(run: Scripts, task: str, queue: str, declared: str, lane: str) -> tuple[str, str]:
    task_id = f"lim-{uuid.uuid4()}"
    reply = run(scripts.submit(scripts.Enqueue(
        task_id, task, now=time.time(), owner="alice", ttl=60, horizon=time.time() - 60,
        message=task_id.encode(), queue=queue, lane=lane, declared=declared)))
    return task_id, reply.kind


def test_the_due_member_is_byte_for_byte_what_cjson_encodes(redis: Redis) -> None:
    for value in AWKWARD:
        lane = orjson.dumps([value, value]).decode()
        for name in ("send", "a/b", "tâche"):
            lua = redis.eval("return cjson.encode({ARGV[1], ARGV[2]})", 0, name, lane)
            assert keys.due_member(name, lane).encode() == lua, (name, lane)


def test_a_lane_held_by_its_rate_shows_when_it_goes_next(redis_url: str, redis: Redis, task: str) -> None:
    run, lane = Scripts(redis), '["k/1",""]'  # a "/" in the lane: escaped in ADMIT_DUE's member
    ids = [submit(run, task, f"q-{task}", '{"rate":[1,60000,1]}', lane) for _ in range(3)]
    assert [kind for _, kind in ids] == ["queued", "waiting", "waiting"]
    try:
        shown = with_limits(redis_url, task, lambda limits: limits.get(task))
        assert shown.declared.rate_limit == "1/m" and shown.source == "declared"
        [usage] = shown.keys
        assert (usage.rate_key, usage.concurrency_key, usage.running, usage.waiting) == ("k/1", "", 0, 2)
        assert usage.next_admission_at is not None, "found by the member admission.lua wrote"
        assert 50 < usage.next_admission_at.timestamp() - time.time() <= 61
    finally:
        redis.zrem(keys.ADMIT_DUE, keys.due_member(task, lane))
        redis.delete(f"q-{task}")


def test_an_override_marks_the_lanes_due_and_the_keepers_admit_the_waiting_runs(
        redis_url: str, redis: Redis, task: str) -> None:
    run, queue = Scripts(redis), f"q-{task}"
    lanes = ['["","k/1"]', '["","k\\u007f2"]']
    ids = {lane: [submit(run, task, queue, '{"concurrency":1}', lane) for _ in range(2)] for lane in lanes}
    assert all([kind for _, kind in runs] == ["queued", "waiting"] for runs in ids.values())
    try:
        shown = with_limits(redis_url, task, lambda limits: limits.put(task, LimitsChange(concurrency=2)))
        assert shown.override == {"concurrency": 2} and shown.effective.concurrency == 2
        members = [keys.due_member(task, lane) for lane in lanes]
        assert all(redis.zscore(keys.ADMIT_DUE, member) is not None for member in members)
        assert run(scripts.admit(1000))[0] >= 2, "a keeper's pass"
        assert redis.llen(queue) == 4, "both waiting runs went"
        assert all(redis.zscore(keys.ADMIT_DUE, member) is None for member in members), "the keeper took them"
        assert [redis.hget(keys.record(task_id), "waiting_for") for runs in ids.values() for task_id, _ in runs] \
            == [None] * 4
        # dropping the override marks the (now empty) lanes again: nothing to admit, nothing breaks
        with_limits(redis_url, task, lambda limits: limits.delete(task))
        assert redis.hget(keys.LIMITS_OVERRIDE, task) is None
    finally:
        redis.zrem(keys.ADMIT_DUE, *[keys.due_member(task, lane) for lane in lanes])
        redis.delete(queue)

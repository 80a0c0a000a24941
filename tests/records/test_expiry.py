"""Expiry in the record scripts, run directly against the session's Valkey: START ends a run
past its expiry instead of starting it, release never queues one, and the keeper's sweep
(``expire.lua``) ends the runs that wait past theirs. Records are written here by hand with
the fields submit writes (``expires_at`` in ms, the id in ``taskgate:expiring``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from redis import Redis

from taskgate.constants import ANONYMOUS
from taskgate.records import decode, keys, scripts
from taskgate.records.scripts import Scripts
from taskgate.states import TaskState

OWNER = "expiry-tests"


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    """The session's Valkey; what the test made there is deleted after it."""
    client = Redis.from_url(redis_url)
    made: list[str] = []
    client.made = made  # type: ignore[attr-defined]
    yield client
    if made:
        client.delete(*(keys.record(task_id) for task_id in made), *(keys.alive(task_id) for task_id in made),
                      *(f"q-{task_id}" for task_id in made))
        for index in (keys.DELAYED, keys.EXPIRING):
            client.zrem(index, *made)
    client.delete(keys.inflight(OWNER), keys.inflight(ANONYMOUS))
    client.close()


@pytest.fixture
def run(redis: Redis) -> Scripts:
    return Scripts(redis)


def waiting(redis: Redis, *, expires_in: float, state: str = "queued", owner: str | None = OWNER,
            delayed_for: float | None = None) -> tuple[str, float]:
    """A record as submit leaves it, expiring ``expires_in`` s from now (negative: past):
    (task id, its expiry in s). ``delayed_for``: parked in the delayed set, due then."""
    task_id = f"expiry-test-{uuid.uuid4()}"
    redis.made.append(task_id)  # type: ignore[attr-defined]
    now = time.time()
    expires_at = now + expires_in
    fields: dict[str, str | int] = {"name": "add", "state": state, "created_at": round(now * 1000),
                                    "attempts": 0, "expires_at": round(expires_at * 1000)}
    if owner is not None:
        fields["owner"] = owner
    if delayed_for is not None:
        fields |= {"message": "the message", "queue": f"q-{task_id}",
                   "next_attempt_at": round((now + delayed_for) * 1000)}
        redis.zadd(keys.DELAYED, {task_id: now + delayed_for})
    redis.hset(keys.record(task_id), mapping=fields)
    redis.zadd(keys.EXPIRING, {task_id: expires_at})
    redis.zadd(keys.inflight(owner or ANONYMOUS), {task_id: now})
    return task_id, expires_at


def start(run: Scripts, task_id: str, owner: str = OWNER) -> str:
    return run(scripts.start(task_id, owner, name="add", now=time.time(), ttl=60, max_deliveries=3,
                             node="node-1", failure_ttl=90)).verdict


def stored(redis: Redis, task_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis.hgetall(keys.record(task_id)).items()}


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- START --------------------------------------------------------------------------------------

def test_start_ends_a_run_past_its_expiry_instead_of_running_it(redis: Redis, run: Scripts) -> None:
    task_id, expires_at = waiting(redis, expires_in=-1)
    done_before = int(redis.hget(keys.STATS, "done:add:expired") or 0)
    with redis.pubsub() as channel:
        channel.subscribe(keys.events(task_id))
        channel.get_message(timeout=1)  # the subscription's confirmation
        assert start(run, task_id) == "expired"
        published = channel.get_message(timeout=1)
    record = decode(task_id, redis.hgetall(keys.record(task_id)))
    assert record.state is TaskState.EXPIRED and record.ended
    assert record.started_at is None and record.attempts == 0 and record.finished_at is not None
    assert record.error == {"type": "Expired", "retryable": False, "message":
                            f"not started before its expiry ({iso(expires_at)}): it will never run"}
    assert record.expires_at is not None and abs(record.expires_at.timestamp() - expires_at) < 0.002
    assert [change.state for change in record.timeline] == [TaskState.QUEUED, TaskState.EXPIRED]
    assert 0 < redis.ttl(keys.record(task_id)) <= 60, "kept for the result TTL, as a cancelled one"
    assert redis.zscore(keys.inflight(OWNER), task_id) is None, "no longer in flight"
    assert not redis.exists(keys.alive(task_id))
    assert int(redis.hget(keys.STATS, "done:add:expired") or 0) == done_before + 1
    assert published is not None and orjson.loads(published["data"])["state"] == "expired"
    assert start(run, task_id) == "expired", "a second delivery is skipped too"


def test_start_runs_a_run_before_its_expiry(redis: Redis, run: Scripts) -> None:
    task_id, _ = waiting(redis, expires_in=60)
    assert start(run, task_id) == "run"
    assert stored(redis, task_id)["state"] == "started"


def test_start_of_an_anonymous_run_past_its_expiry(redis: Redis, run: Scripts) -> None:
    task_id, _ = waiting(redis, expires_in=-1, owner=None)
    assert run(scripts.start(task_id, OWNER, name="add", now=time.time(), ttl=60, max_deliveries=3,
                             node="node-1", failure_ttl=90)) == scripts.StartReply("owner", ANONYMOUS)
    assert start(run, task_id, ANONYMOUS) == "expired"
    assert redis.zscore(keys.inflight(ANONYMOUS), task_id) is None


def test_a_cancel_asked_before_the_expiry_still_reads_cancelled(redis: Redis, run: Scripts) -> None:
    task_id, _ = waiting(redis, expires_in=-1)
    redis.hset(keys.record(task_id), "cancel", "1")
    assert start(run, task_id) == "cancelled"


# --- release ------------------------------------------------------------------------------------

def test_release_never_queues_a_run_past_its_expiry(redis: Redis, run: Scripts) -> None:
    late, late_expiry = waiting(redis, expires_in=-0.5, delayed_for=-0.1)
    redis.zrem(keys.EXPIRING, late)  # as if the sweep had dropped it while it ran: release adds it back
    on_time, _ = waiting(redis, expires_in=60, delayed_for=-0.1)
    moved = run(scripts.release(time.time(), [(late, f"q-{late}"), (on_time, f"q-{on_time}")]))
    assert moved == 1
    assert redis.llen(f"q-{late}") == 0, "never queued"
    assert redis.lrange(f"q-{on_time}", 0, -1) == [b"the message"]
    assert redis.zscore(keys.DELAYED, late) is None
    assert redis.zscore(keys.EXPIRING, late) == pytest.approx(late_expiry, abs=0.002), "left to the sweep"
    reply = run(scripts.expire(late, OWNER, now=time.time(), ttl=60))
    assert reply.verdict == "expired" and stored(redis, late)["state"] == "expired"


# --- the sweep ----------------------------------------------------------------------------------

def test_sweep_ends_a_queued_run_past_its_expiry(redis: Redis, run: Scripts) -> None:
    task_id, _ = waiting(redis, expires_in=-0.1)
    assert run(scripts.expire(task_id, OWNER, now=time.time(), ttl=60)) == scripts.ExpireReply("expired")
    record = stored(redis, task_id)
    assert record["state"] == "expired" and orjson.loads(record["error"])["type"] == "Expired"
    assert redis.zscore(keys.EXPIRING, task_id) is None
    assert redis.zscore(keys.inflight(OWNER), task_id) is None
    assert start(run, task_id) == "expired", "its message, taken later, never runs"


def test_sweep_ends_a_delayed_or_retrying_run_and_takes_it_off_the_delayed_set(
        redis: Redis, run: Scripts) -> None:
    for state in ("queued", "retrying"):
        task_id, _ = waiting(redis, expires_in=-0.1, state=state, delayed_for=30)
        assert run(scripts.expire(task_id, OWNER, now=time.time(), ttl=60)).verdict == "expired"
        record = stored(redis, task_id)
        assert record["state"] == "expired"
        assert not {"message", "queue", "next_attempt_at"} & record.keys()
        assert redis.zscore(keys.DELAYED, task_id) is None
        assert run(scripts.release(time.time() + 60, [(task_id, None)])) == 0


def test_sweep_leaves_started_and_ended_runs_and_drops_their_ids(redis: Redis, run: Scripts) -> None:
    for state in ("started", "succeeded", "cancelled"):
        task_id, _ = waiting(redis, expires_in=-0.1, state=state)
        assert run(scripts.expire(task_id, OWNER, now=time.time(), ttl=60)).verdict == "skipped"
        assert stored(redis, task_id)["state"] == state
        assert redis.zscore(keys.EXPIRING, task_id) is None


def test_sweep_of_a_run_not_yet_due_puts_it_back_at_its_expiry(redis: Redis, run: Scripts) -> None:
    task_id, expires_at = waiting(redis, expires_in=30)
    redis.zadd(keys.EXPIRING, {task_id: time.time() - 1})  # a score that is wrong
    assert run(scripts.expire(task_id, OWNER, now=time.time(), ttl=60)).verdict == "later"
    assert stored(redis, task_id)["state"] == "queued"
    assert redis.zscore(keys.EXPIRING, task_id) == pytest.approx(expires_at, abs=0.002)


def test_sweep_of_a_missing_record_or_another_owner(redis: Redis, run: Scripts) -> None:
    gone = f"expiry-test-{uuid.uuid4()}"
    redis.made.append(gone)  # type: ignore[attr-defined]
    redis.zadd(keys.EXPIRING, {gone: time.time() - 1})
    assert run(scripts.expire(gone, OWNER, now=time.time(), ttl=60)).verdict == "missing"
    assert redis.zscore(keys.EXPIRING, gone) is None
    task_id, _ = waiting(redis, expires_in=-1)
    assert run(scripts.expire(task_id, "someone-else", now=time.time(), ttl=60)) == \
        scripts.ExpireReply("owner", OWNER)
    assert stored(redis, task_id)["state"] == "queued", "nothing changed"


def test_the_expiry_in_the_error_is_the_utc_time(redis: Redis, run: Scripts) -> None:
    source = scripts.source("times") + scripts.source("expiry") + "\nreturn iso(ARGV[1])"
    for when in (0, 951782400, 951868799, 1709251199, 1735689599, 4102444800, 1798761599.999):
        assert redis.eval(source, 0, round(when * 1000)).decode() == iso(when), when

"""Records of the earlier key layout are moved once, keeping their TTL; later starts skip it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis

from taskgate.records import keys
from taskgate.records.upgrade import LAYOUT, upgrade


@pytest.fixture
def redis(own_redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(own_redis_url)
    yield client
    client.close()


def test_layout_1_keys_move_with_their_ttl(redis: Redis) -> None:
    redis.hset("taskgate:task:old-1", mapping={"name": "add", "state": "succeeded"})
    redis.expire("taskgate:task:old-1", 500)
    redis.hset("taskgate:task:old-2", mapping={"name": "add", "state": "queued"})
    redis.set("taskgate:idem:ann:key-1", b'["old-2", "d"]', ex=600)
    redis.hset(keys.record("new-1"), "state", "queued")
    assert upgrade(redis) == 3
    assert redis.hgetall(keys.record("old-1")) == {b"name": b"add", b"state": b"succeeded"}
    assert 490 < redis.ttl(keys.record("old-1")) <= 500
    assert redis.ttl(keys.record("old-2")) == -1, "a record that may still run keeps no TTL"
    assert redis.get(keys.idempotency("ann", "key-1")) == b'["old-2", "d"]'
    assert not redis.exists("taskgate:task:old-1", "taskgate:task:old-2", "taskgate:idem:ann:key-1")
    assert redis.hget(keys.record("new-1"), "state") == b"queued", "layout 2 keys are left alone"
    assert redis.get(keys.LAYOUT) == str(LAYOUT).encode()
    redis.hset("taskgate:task:late", "state", "queued")  # written by a process not yet stopped
    assert upgrade(redis) == 0, "once per Redis"


def test_layout_2_idempotency_keys_move_when_owner_and_key_can_be_told_apart(redis: Redis) -> None:
    """Layout 2 joined owner and key with ``:``: a key with one ``:`` moves to layout 3's
    hashed form (keeping its TTL); one where ``alice`` + ``x:k`` cannot be told from
    ``alice:x`` + ``k`` is left to expire; records stay where they are."""
    redis.set(keys.LAYOUT, "2")
    redis.set("taskgate:idem:{ann:key-2}", b'["t-1", "d"]', ex=600)
    redis.set("taskgate:idem:{alice:x:k}", b'["t-2", "d"]', ex=600)
    redis.hset(keys.record("kept"), "state", "queued")
    assert upgrade(redis) == 1
    assert redis.get(keys.idempotency("ann", "key-2")) == b'["t-1", "d"]'
    assert 590 < redis.ttl(keys.idempotency("ann", "key-2")) <= 600
    assert redis.get("taskgate:idem:{alice:x:k}") == b'["t-2", "d"]', "ambiguous: left to expire"
    assert not redis.exists(keys.idempotency("alice", "x:k"), keys.idempotency("alice:x", "k"))
    assert redis.hget(keys.record("kept"), "state") == b"queued"
    assert redis.get(keys.LAYOUT) == str(LAYOUT).encode()


def test_upgrade_at_checks_the_layout_then_scans_once(own_redis_url: str, redis: Redis) -> None:
    from taskgate.records.upgrade import upgrade_at

    redis.hset("taskgate:task:old-3", "state", "queued")
    assert upgrade_at(own_redis_url, 1.0) == 1
    assert redis.hget(keys.record("old-3"), "state") == b"queued"
    assert upgrade_at(own_redis_url, 1.0) == 0

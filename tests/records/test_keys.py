"""Every per-owner key keeps owners apart, whatever separators their names hold: the keys
themselves, and the submit script's Idempotency-Key check against the session's Valkey."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis

from taskgate.records import keys, scripts
from taskgate.records.scripts import Scripts

#: Owner names holding each separator a key could be built with (``Taskgate(owner=...)`` may
#: name any string), and idempotency keys that would complete them.
OWNERS = ["alice", "alice:x", "alice:", "alice{x}", "alice}", "{alice", "alice x", "alice/x", "alice|x",
          "alice\nx", "a:b:c", "7:alice", "", ":", "alice*", "ålice"]
IDEMPOTENCY_KEYS = ["k", "x:k", ":k", "x}k", "{x}:k", "", "alice:x", "7:k", "b:c"]
PER_OWNER = (keys.owner_index, keys.inflight, keys.rate, keys.owner_schedules)
GLOBAL = (keys.INDEX, keys.DELAYED, keys.DEAD, keys.STATS, keys.CATALOGUE, keys.REAPER_LOCK, keys.LAYOUT,
          keys.SCHEDULES_DUE, keys.SCHEDULES)


def test_no_two_owners_and_keys_meet() -> None:
    pairs = list(itertools.product(OWNERS, IDEMPOTENCY_KEYS))
    assert len({keys.idempotency(owner, key) for owner, key in pairs}) == len(pairs)
    assert keys.idempotency("alice", "x:k") != keys.idempotency("alice:x", "k")
    made = [family(owner) for family in PER_OWNER for owner in OWNERS]
    assert len(set(made)) == len(made), "each owner has its own key in each family"
    assert not set(made) & set(GLOBAL)


@pytest.mark.parametrize("owner,key", [("alice", "x:k"), ("alice{x}", "k"), ("a}b", "{c"), ("", "k")])
def test_an_idempotency_key_has_one_clean_hash_tag(owner: str, key: str) -> None:
    """Redis Cluster slots a key by what its first ``{...}`` holds: the pair's hash, never a
    brace an owner or key brought."""
    name = keys.idempotency(owner, key)
    tag = name[name.index("{") + 1:name.index("}")]
    assert len(tag) == 64 and set(tag) <= set("0123456789abcdef")
    assert name == f"{keys.IDEMPOTENCY_PREFIX}{{{tag}}}"


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


def test_owners_whose_names_hold_separators_each_get_their_own_task(redis: Redis) -> None:
    """Owner ``alice`` with key ``x:k`` and owner ``alice:x`` with key ``k`` (and others alike)
    each get a task of their own, queued; the same owner and key again replays it."""
    run = Scripts(redis)
    suffix = uuid.uuid4().hex[:8]
    pairs = [(f"alice{suffix}", "x:k"), (f"alice{suffix}:x", "k"), (f"alice{suffix}:x:k", ""),
             (f"alice{suffix}", "x:k:"), (f"alice{suffix}}}", "x"), (f"alice{suffix}", "}x")]
    queue = f"q-keys-{suffix}"
    made: dict[tuple[str, str], str] = {}
    try:
        for owner, key in pairs:
            task_id = f"keys-test-{uuid.uuid4()}"
            reply = run(scripts.submit(scripts.Enqueue(
                task_id, "add", now=time.time(), owner=owner, ttl=60,
                horizon=time.time() - 60, message=task_id.encode(), queue=queue, due=None,
                idempotency=key, digest="d", rate_limit=0, inflight_limit=0, deadline=None,
                idempotency_ttl=60)))
            assert reply == scripts.SubmitReply("queued"), (owner, key, reply)
            made[owner, key] = task_id
        assert redis.llen(queue) == len(pairs), "every one of them was queued"
        owner, key = pairs[1]
        again = run(scripts.submit(scripts.Enqueue(
            f"keys-test-{uuid.uuid4()}", "add", now=time.time(), owner=owner, ttl=60,
            horizon=time.time() - 60, message=b"again", queue=queue, due=None, idempotency=key,
            digest="d", rate_limit=0, inflight_limit=0, deadline=None, idempotency_ttl=60)))
        assert again == scripts.SubmitReply("replayed", made[owner, key])
    finally:
        redis.delete(queue, *(keys.record(task_id) for task_id in made.values()),
                     *(keys.idempotency(owner, key) for owner, key in made),
                     *(keys.owner_index(owner) for owner, _ in made))
        redis.zrem(keys.INDEX, *made.values())

"""The sender's scripts, run directly against a private Valkey: ``webhook_claim.lua`` (claims
with a lease) and ``webhook_result.lua`` (an attempt's outcome, the schedule's end, a 410, a
streak of failures)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from redis import Redis

from taskgate.constants import STATS_TTL
from taskgate.records import keys, scripts, webhooks
from taskgate.records import webhooks_scripts as calls

from ..worker.receiver import deliver, fields, subscribe

DAY_MS = 86_400_000


@pytest.fixture
def redis(own_redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(own_redis_url)
    yield client
    client.close()


@pytest.fixture
def run(redis: Redis) -> scripts.Scripts:
    return scripts.Scripts(redis)


def now_ms() -> int:
    """Now in whole ms, as the scripts read Redis's TIME (rounded down)."""
    return int(time.time() * 1000)


def test_claim_takes_the_due_ones_earliest_first_and_leases_them(redis: Redis, run: scripts.Scripts) -> None:
    now = now_ms()
    redis.zadd(keys.WEBHOOK_DUE, {"a": now - 3000, "b": now - 2000, "c": now - 1000, "later": now + 60_000})
    assert run(calls.claim(2, 30_000)) == ["a", "b"]
    for member in ("a", "b"):
        assert now + 29_000 < (redis.zscore(keys.WEBHOOK_DUE, member) or 0) < now + 31_000
    assert run(calls.claim(10, 30_000)) == ["c"]
    assert run(calls.claim(10, 30_000)) == []
    assert redis.zscore(keys.WEBHOOK_DUE, "later") == now + 60_000


def record(run: scripts.Scripts, key: str, webhook_id: str, outcome: calls.Outcome, *,
           status: int | None = None, retry_ms: int | None = None, streak_ms: int = 5 * DAY_MS) -> str:
    return run(calls.result(key, webhook_id, outcome, status=status, error="" if outcome == "delivered" else "why",
                            retry_ms=retry_ms, ttl=600, streak_ms=streak_ms, reason="the reason"))


def test_an_error_schedules_the_next_attempt_and_starts_the_streak(redis: Redis, run: scripts.Scripts) -> None:
    webhook_id, _ = subscribe(redis, "https://example.com/hook")
    key, _ = deliver(redis, webhook_id)
    before = now_ms()
    assert record(run, key, webhook_id, "error", status=500, retry_ms=5000) == "retrying"
    delivery, subscription = fields(redis, key), fields(redis, keys.webhook(webhook_id))
    assert delivery["state"] == "pending" and delivery["attempts"] == "1" and delivery["last_status"] == "500"
    assert delivery["last_error"] == "why" and int(delivery["last_at"]) >= before
    assert int(delivery["next_at"]) == redis.zscore(keys.WEBHOOK_DUE, key) == int(delivery["last_at"]) + 5000
    assert redis.ttl(key) == -1
    streak = subscription["failing_since"]
    assert int(streak) >= before
    assert record(run, key, webhook_id, "error", retry_ms=5000) == "retrying"  # no answer: no status
    assert "last_status" not in fields(redis, key) and fields(redis, key)["attempts"] == "2"
    assert fields(redis, keys.webhook(webhook_id))["failing_since"] == streak  # the streak's first failure
    assert record(run, key, webhook_id, "error", status=502) == "failed"  # the schedule is spent
    assert fields(redis, key)["state"] == "failed" and "next_at" not in fields(redis, key)
    assert redis.zscore(keys.WEBHOOK_DUE, key) is None and 0 < redis.ttl(key) <= 600
    assert fields(redis, keys.webhook(webhook_id))["enabled"] == "1"
    assert record(run, key, webhook_id, "delivered", status=200) == "failed"  # a late duplicate: nothing done
    assert fields(redis, key)["attempts"] == "3"
    stats = fields(redis, keys.STATS)
    assert (stats["webhook:retrying"], stats["webhook:failed"]) == ("2", "1") and "webhook:delivered" not in stats
    assert 0 < redis.ttl(keys.STATS) <= STATS_TTL


def test_a_delivery_ends_the_streak(redis: Redis, run: scripts.Scripts) -> None:
    webhook_id, _ = subscribe(redis, "https://example.com/hook")
    redis.hset(keys.webhook(webhook_id), "failing_since", now_ms() - DAY_MS)
    key, _ = deliver(redis, webhook_id)
    redis.hset(key, mapping={"last_error": "earlier", "last_status": "500"})
    assert record(run, key, webhook_id, "delivered", status=204) == "delivered"
    delivery = fields(redis, key)
    assert delivery["state"] == "delivered" and delivery["last_status"] == "204" and "last_error" not in delivery
    assert redis.zscore(keys.WEBHOOK_DUE, key) is None and 0 < redis.ttl(key) <= 600
    assert "failing_since" not in fields(redis, keys.webhook(webhook_id))
    assert fields(redis, keys.STATS)["webhook:delivered"] == "1"


def test_a_streak_longer_than_allowed_disables_the_subscription(redis: Redis, run: scripts.Scripts) -> None:
    webhook_id, _ = subscribe(redis, "https://example.com/hook")
    key, _ = deliver(redis, webhook_id)
    redis.hset(keys.webhook(webhook_id), "failing_since", now_ms() - 4 * DAY_MS)
    assert record(run, key, webhook_id, "error", status=500, retry_ms=1000) == "retrying"  # 4 days: not yet
    redis.hset(keys.webhook(webhook_id), "failing_since", now_ms() - 5 * DAY_MS - 1000)
    assert record(run, key, webhook_id, "error", status=500, retry_ms=1000) == "disabled"
    subscription = fields(redis, keys.webhook(webhook_id))
    assert subscription["enabled"] == "0" and subscription["disabled_reason"] == "the reason"
    assert fields(redis, key)["state"] == "failed" and redis.zscore(keys.WEBHOOK_DUE, key) is None
    # the subscription's other deliveries are tried no more
    other, _ = deliver(redis, webhook_id)
    assert record(run, other, webhook_id, "error", status=500, retry_ms=1000) == "failed"


def test_410_disables_and_a_dropped_delivery_fails_unsent(redis: Redis, run: scripts.Scripts) -> None:
    webhook_id, _ = subscribe(redis, "https://example.com/hook")
    seq = int(fields(redis, keys.webhook(webhook_id))["seq"])
    key, _ = deliver(redis, webhook_id)
    assert record(run, key, webhook_id, "gone", status=410) == "gone"
    subscription = fields(redis, keys.webhook(webhook_id))
    assert subscription["enabled"] == "0" and subscription["disabled_reason"] == "the reason"
    assert int(subscription["seq"]) == seq + 1
    assert fields(redis, key)["state"] == "failed" and fields(redis, key)["last_status"] == "410"
    other, _ = deliver(redis, webhook_id)
    assert record(run, other, webhook_id, "dropped") == "dropped"
    assert fields(redis, other)["attempts"] == "0" and fields(redis, other)["last_error"] == "why"
    assert fields(redis, other)["state"] == "failed" and redis.zscore(keys.WEBHOOK_DUE, other) is None
    stats = fields(redis, keys.STATS)
    assert (stats["webhook:gone"], stats["webhook:dropped"]) == ("1", "1")


def test_a_missing_delivery_only_leaves_the_due_set(redis: Redis, run: scripts.Scripts) -> None:
    key = keys.delivery(webhooks.delivery_id("wh_gone", "msg_x_succeeded"))
    redis.zadd(keys.WEBHOOK_DUE, {key: 1})
    assert record(run, key, "wh_gone", "delivered", status=200) == "missing"
    assert redis.zcard(keys.WEBHOOK_DUE) == 0 and not redis.exists(keys.webhook("wh_gone"), keys.STATS)


def test_delivery_ids_of_keys() -> None:
    delivery_id = webhooks.delivery_id("wh_1", "msg_t_failed")
    assert calls.delivery_id_of(keys.delivery(delivery_id)) == delivery_id


def test_lua_mirrors_agree() -> None:
    source = scripts.source("webhook_result")
    assert int(re.search(r"local STATS_TTL = (\d+)", source)[1]) == STATS_TTL  # type: ignore[index]

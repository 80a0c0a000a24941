"""The API's delivery scripts, run directly against a private Valkey: ``webhook_test.lua`` (a
test event written due now) and ``webhook_retry.lua`` (a delivery not delivered due again now,
its state machine's refusals)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
from redis import Redis

from taskgate.records import keys, scripts, webhooks
from taskgate.records import webhooks_scripts as calls

from ..worker.receiver import deliver, fields, subscribe


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


def test_a_test_event_is_written_due_now_and_listed(redis: Redis, run: scripts.Scripts) -> None:
    webhook_id, _ = subscribe(redis, "https://example.com/hook")
    msg_id = webhooks.new_test_msg_id()
    key = keys.delivery(webhooks.delivery_id(webhook_id, msg_id))
    before = now_ms()
    assert run(calls.send_test(webhook_id, msg_id, "webhook.test", b'{"a": 1}')) == "created"
    delivery = fields(redis, key)
    assert delivery == {"webhook": webhook_id, "msg_id": msg_id, "type": "webhook.test", "payload": '{"a": 1}',
                        "attempts": "0", "state": "pending", "next_at": delivery["created_at"],
                        "created_at": delivery["created_at"]}
    assert before <= int(delivery["created_at"]) <= now_ms()
    assert redis.zscore(keys.WEBHOOK_DUE, key) == int(delivery["next_at"])
    assert redis.zscore(keys.deliveries_of(webhook_id), key) == int(delivery["created_at"])
    # the same msg id again: nothing written
    assert run(calls.send_test(webhook_id, msg_id, "webhook.test", b"{}")) == "exists"
    assert fields(redis, key)["payload"] == '{"a": 1}'


def test_a_test_event_is_refused_for_a_disabled_or_missing_subscription(redis: Redis,
                                                                        run: scripts.Scripts) -> None:
    webhook_id, _ = subscribe(redis, "https://example.com/hook")
    redis.hset(keys.webhook(webhook_id), "enabled", "0")
    assert run(calls.send_test(webhook_id, "msg_test_1", "webhook.test", b"{}")) == "disabled"
    assert run(calls.send_test(webhooks.new_id(), "msg_test_2", "webhook.test", b"{}")) == "missing"
    assert redis.zcard(keys.WEBHOOK_DUE) == 0 and redis.keys(keys.DELIVERY_PREFIX + "*") == []


def test_the_list_keeps_the_newest(redis: Redis, run: scripts.Scripts) -> None:
    webhook_id, _ = subscribe(redis, "https://example.com/hook")
    listed = keys.deliveries_of(webhook_id)
    redis.zadd(listed, {f"old-{i}": i for i in range(webhooks.DELIVERIES_KEPT)})
    assert run(calls.send_test(webhook_id, "msg_test_x", "webhook.test", b"{}")) == "created"
    assert redis.zcard(listed) == webhooks.DELIVERIES_KEPT
    assert redis.zscore(listed, "old-0") is None
    assert redis.zscore(listed, keys.delivery(webhooks.delivery_id(webhook_id, "msg_test_x"))) is not None


def end(redis: Redis, key: str, state: str) -> None:
    """The delivery ended as ``webhook_result.lua`` ends one: out of the due set, expiring."""
    redis.hset(key, mapping={"state": state, "attempts": 4, "last_status": 503})
    redis.hdel(key, "next_at")
    redis.zrem(keys.WEBHOOK_DUE, key)
    redis.expire(key, 600)


def delivery_id(key: str) -> str:
    return calls.delivery_id_of(key)


def test_a_failed_delivery_is_due_now_again_its_attempts_counting_on(redis: Redis, run: scripts.Scripts) -> None:
    webhook_id, _ = subscribe(redis, "https://example.com/hook")
    key, _ = deliver(redis, webhook_id)
    end(redis, key, "failed")
    before = now_ms()
    assert run(calls.retry(webhook_id, delivery_id(key))) == "due"
    delivery = fields(redis, key)
    assert delivery["state"] == "pending" and delivery["attempts"] == "4" and delivery["last_status"] == "503"
    assert before <= int(delivery["next_at"]) == redis.zscore(keys.WEBHOOK_DUE, key) <= now_ms()
    assert redis.ttl(key) == -1  # kept until it ends again
    assert orjson.loads(delivery["payload"])["state"] == "succeeded"  # the same body


def test_a_pending_delivery_waiting_for_its_next_attempt_is_due_now(redis: Redis, run: scripts.Scripts) -> None:
    webhook_id, _ = subscribe(redis, "https://example.com/hook")
    key, _ = deliver(redis, webhook_id)
    later = now_ms() + 3_600_000  # as webhook_result.lua schedules a retry: next_at and the score
    redis.hset(key, mapping={"attempts": 2, "next_at": later})
    redis.zadd(keys.WEBHOOK_DUE, {key: later})
    assert run(calls.retry(webhook_id, delivery_id(key))) == "due"
    assert (redis.zscore(keys.WEBHOOK_DUE, key) or later) <= now_ms()
    assert fields(redis, key)["attempts"] == "2"


def test_a_retry_is_refused_for_a_delivered_claimed_foreign_or_disabled_one(redis: Redis,
                                                                          run: scripts.Scripts) -> None:
    webhook_id, _ = subscribe(redis, "https://example.com/hook")
    delivered, _ = deliver(redis, webhook_id)
    end(redis, delivered, "delivered")
    assert run(calls.retry(webhook_id, delivery_id(delivered))) == "delivered"
    assert fields(redis, delivered)["state"] == "delivered" and redis.ttl(delivered) > 0
    claimed, _ = deliver(redis, webhook_id)
    redis.zadd(keys.WEBHOOK_DUE, {claimed: 0})  # due by Redis's clock however this one's rounds
    assert run(calls.claim(10, 60_000)) == [claimed]
    lease = int(redis.zscore(keys.WEBHOOK_DUE, claimed) or 0)
    assert run(calls.retry(webhook_id, delivery_id(claimed))) == f"sending:{lease}"
    assert redis.zscore(keys.WEBHOOK_DUE, claimed) == lease
    other, _ = subscribe(redis, "https://example.com/other")
    assert run(calls.retry(other, delivery_id(claimed))) == "missing"
    assert run(calls.retry(webhook_id, f"{webhook_id}:msg_none")) == "missing"
    failed, _ = deliver(redis, webhook_id)
    end(redis, failed, "failed")
    redis.hset(keys.webhook(webhook_id), "enabled", "0")
    assert run(calls.retry(webhook_id, delivery_id(failed))) == "disabled"
    assert fields(redis, failed)["state"] == "failed" and redis.zscore(keys.WEBHOOK_DUE, failed) is None

"""The live feed's fan-out (``producer.feed``) in process against a private Valkey: feeds with
one view get each batch as the same bytes, encoded once; each sees only what it may; a feed
busy writing reads what it missed at the next flush; a quiet feed gets keep-alives; a lost
subscription ends every feed; a batch that cannot be encoded ends its feeds, not the others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable

import orjson
import pytest
from redis.asyncio import Redis

from taskgate.auth import Caller
from taskgate.connections import feed as feed_client
from taskgate.exceptions import BackendUnavailable
from taskgate.producer import feed as module
from taskgate.producer.feed import Feed, FeedEntry
from taskgate.records import keys

encoded: list[tuple[str, ...]] = []


def encode(batch: list[FeedEntry]) -> bytes:
    """The batch's task ids and states, as bytes; each call noted."""
    encoded.append(tuple(change.record.task_id for change in batch))
    if any(change.record.name == "unrenderable" for change in batch):
        raise ValueError("cannot render it")
    return b" ".join(f"{change.record.task_id}={change.record.state}".encode() for change in batch)


async def change(redis: Redis, task_id: str, owner: str, name: str = "add", state: str = "queued") -> None:
    await redis.publish(keys.events(task_id), orjson.dumps({"name": name, "owner": owner, "state": state}))


async def until(check: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Reading:
    """One feed read on a task of its own, every frame kept (``pause`` holds it between frames)."""

    def __init__(self, feed: Feed, caller: Caller, name: str | None = None) -> None:
        self.frames: list[bytes] = []
        self.go = asyncio.Event()
        self.go.set()
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._read(feed.stream(caller, encode, name=name)))

    async def _read(self, frames: AsyncGenerator[bytes]) -> None:
        try:
            async for frame in frames:
                self.frames.append(frame)
                await self.go.wait()
        except (BackendUnavailable, ValueError) as exc:
            self.error = exc
        finally:
            await frames.aclose()

    def shown(self) -> set[str]:
        return {item.split("=")[0] for frame in self.frames for item in frame.decode().split()}


def run(url: str, body: Callable[[Feed, Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        feed, redis = Feed(feed_client(url, 1.0), 100, 100), Redis.from_url(url)
        try:
            await body(feed, redis)
        finally:
            await feed.close()
            await redis.aclose()

    asyncio.run(main())


def test_feeds_with_one_view_share_each_batch_and_see_only_theirs(own_redis_url: str) -> None:
    async def body(feed: Feed, redis: Redis) -> None:
        anns = [Reading(feed, Caller("ann")) for _ in range(3)]
        bobs = [Reading(feed, Caller("bob")) for _ in range(2)]
        admin, ann_adds = Reading(feed, Caller("ops", admin=True)), Reading(feed, Caller("ann"), name="add")
        everyone = [*anns, *bobs, admin, ann_adds]
        await until(lambda: all(reading.frames == [b""] for reading in everyone), "every feed live")
        encoded.clear()
        await change(redis, "a1", "ann")
        await change(redis, "b1", "bob")
        await change(redis, "a2", "ann", name="mail")
        await change(redis, "a1", "ann", state="started")
        await until(lambda: b"a1=started" in b" ".join(anns[0].frames) and admin.shown() == {"a1", "b1", "a2"},
                    "the changes to reach the feeds")
        await until(lambda: all(reading.shown() for reading in everyone), "every feed's batch")
        for group in (anns, bobs):  # one view: the same bytes, the very same object
            assert all(len(reading.frames) == len(group[0].frames) for reading in group)
            assert all(mine is first for reading in group for mine, first in zip(reading.frames, group[0].frames, strict=True))
        assert anns[0].shown() == {"a1", "a2"} and bobs[0].shown() == {"b1"} and ann_adds.shown() == {"a1"}
        # each batch encoded once per view: ann's, bob's, the admin's, ann's adds (no more)
        batches = {id(frame) for reading in everyone for frame in reading.frames[1:]}  # frames kept: ids unique
        assert len(encoded) == len(batches), encoded

    run(own_redis_url, body)


def test_a_feed_busy_writing_reads_what_it_missed_at_the_next_flush(own_redis_url: str) -> None:
    async def body(feed: Feed, redis: Redis) -> None:
        slow, quick = Reading(feed, Caller("ann")), Reading(feed, Caller("ann"))
        await until(lambda: slow.frames == [b""] and quick.frames == [b""], "both feeds live")
        slow.go.clear()  # holds the first batch it gets, as a client that does not read
        await change(redis, "t1", "ann")
        await until(lambda: len(slow.frames) == 2 and len(quick.frames) == 2, "the first batch")
        await change(redis, "t2", "ann")
        await change(redis, "t1", "ann", state="started")
        await until(lambda: "t2" in quick.shown(), "the quick feed's next batch")
        assert len(slow.frames) == 2
        slow.go.set()
        await until(lambda: len(slow.frames) == 3, "the slow feed's next batch")
        assert slow.frames[2] == b"t2=queued t1=started"  # what it missed, the latest per task, in one batch

    run(own_redis_url, body)


def test_a_quiet_feed_gets_an_empty_batch_after_keepalive_seconds(own_redis_url: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "KEEPALIVE", 0.3)

    async def body(feed: Feed, redis: Redis) -> None:
        began = time.monotonic()
        reading = Reading(feed, Caller("ann"))
        await change(redis, "b1", "bob")  # not ann's: it does not count as said
        await until(lambda: len(reading.frames) == 3, "two keep-alives")
        assert reading.frames == [b"", b"", b""] and time.monotonic() - began >= 0.6

    run(own_redis_url, body)


def test_a_lost_subscription_ends_every_feed(own_redis_url: str) -> None:
    async def body(feed: Feed, redis: Redis) -> None:
        readings = [Reading(feed, Caller("ann")) for _ in range(3)]
        await until(lambda: all(reading.frames for reading in readings), "the feeds live")
        readings[0].go.clear()  # one not waiting when it is lost
        await change(redis, "t1", "ann")
        await until(lambda: all(len(reading.frames) == 2 for reading in readings), "a batch")
        await redis.client_kill_filter(_type="pubsub")
        await until(lambda: all(reading.task.done() for reading in readings[1:]), "the waiting feeds to end")
        readings[0].go.set()
        await until(lambda: readings[0].task.done(), "the busy feed to end")
        assert all(isinstance(reading.error, BackendUnavailable) for reading in readings)
        assert not feed.readers

    run(own_redis_url, body)


def test_a_batch_that_cannot_be_encoded_ends_its_feeds_not_the_others(own_redis_url: str) -> None:
    async def body(feed: Feed, redis: Redis) -> None:
        eve, ann = Reading(feed, Caller("eve")), Reading(feed, Caller("ann"))
        await until(lambda: bool(eve.frames and ann.frames), "the feeds live")
        await change(redis, "e1", "eve", name="unrenderable")
        await until(lambda: eve.task.done(), "eve's feed to end")
        assert isinstance(eve.error, ValueError)
        await change(redis, "a1", "ann")
        await until(lambda: ann.shown() == {"a1"}, "ann's feed to go on")

    run(own_redis_url, body)

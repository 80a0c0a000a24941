"""The submit script's auto-pipelining, against a private Valkey of its own (it flushes scripts
and kills connections)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import redis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from taskgate.producer.autopipeline import MAX_CALLS, OutcomeUnknown, ScriptPipeline, pack
from taskgate.records.scripts import AtSend

SCRIPT = """
if ARGV[1] == 'fail' then return redis.error_reply('asked to fail') end
redis.call('RPUSH', KEYS[1], ARGV[1])
return ARGV[1]
"""


def test_pack_is_resp() -> None:
    assert pack("SET", "k", b"v\r\n", 12, 1.5) == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$2\r\n12\r\n$3\r\n1.5\r\n"


def test_one_turn_is_one_round_trip_with_replies_in_order(own_redis_url: str) -> None:
    async def main() -> None:
        client = Redis.from_url(own_redis_url)
        pool = client.connection_pool
        acquired = 0
        get_connection = pool.get_connection

        async def counted(*args: object) -> object:
            nonlocal acquired
            acquired += 1
            return await get_connection(*args)

        pool.get_connection = counted  # type: ignore[method-assign]
        pipeline = ScriptPipeline(client, SCRIPT, timeout=5)
        replies = await asyncio.gather(*(pipeline(["list"], [str(i)]) for i in range(200)))
        assert replies == [str(i).encode() for i in range(200)]
        assert acquired == 3  # the 200 calls; NOSCRIPT, so SCRIPT LOAD; the 200 calls again
        replies = await asyncio.gather(*(pipeline(["list"], [str(i)]) for i in range(200, 300)))
        assert replies == [str(i).encode() for i in range(200, 300)]
        assert acquired == 4  # one round trip for 100 calls
        failed = await asyncio.gather(pipeline(["list"], ["a"]), pipeline(["list"], ["fail"]),
                                      pipeline(["list"], ["b"]), return_exceptions=True)
        assert failed[0] == b"a" and failed[2] == b"b"
        assert isinstance(failed[1], ResponseError) and "asked to fail" in str(failed[1])
        await client.aclose()

    asyncio.run(main())
    with redis.Redis.from_url(own_redis_url) as sync:
        assert sync.lrange("list", 0, -1) == [str(i).encode() for i in range(300)] + [b"a", b"b"]


def test_survives_a_killed_connection_and_a_script_flush(own_redis_url: str) -> None:
    async def main() -> None:
        client = Redis.from_url(own_redis_url)
        pipeline = ScriptPipeline(client, SCRIPT, timeout=5)
        assert await pipeline(["list"], ["1"]) == b"1"
        with redis.Redis.from_url(own_redis_url) as sync:
            sync.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            sync.script_flush()
        assert await pipeline(["list"], ["2"]) == b"2"  # stale pooled connection: resent once
        await client.aclose()

    asyncio.run(main())
    with redis.Redis.from_url(own_redis_url) as sync:
        assert sync.lrange("list", 0, -1) == [b"1", b"2"]


def test_a_large_turn_goes_as_round_trips_of_at_most_max_calls(own_redis_url: str) -> None:
    """Each round trip reads its scripts' deadline (an AtSend argument) as it leaves: 1,200 calls
    of one turn are three round trips, the later ones reading a later deadline."""
    read: list[float] = []

    def deadline() -> str:
        read.append(time.monotonic())
        return str(len(read))

    trips: list[float] = []  # when each round trip had come back (its observation)

    async def main() -> list[object]:
        client = Redis.from_url(own_redis_url)
        pipeline = ScriptPipeline(client, SCRIPT, timeout=5, observe=lambda _took: trips.append(time.monotonic()))
        await pipeline(["warm"], ["0"])  # the script loaded: one round trip per chunk below
        read.clear()
        trips.clear()
        at_send = AtSend(deadline)
        replies = await asyncio.gather(*(pipeline(["list"], [at_send]) for _ in range(2 * MAX_CALLS + 200)))
        await client.aclose()
        return replies

    replies = asyncio.run(main())
    assert len(trips) == 3
    assert len(read) == 2 * MAX_CALLS + 200  # each call's argument read once, as its round trip left
    # each round trip's deadlines were read as it left, after the one before it had come back
    assert read[MAX_CALLS - 1] < trips[0] < read[MAX_CALLS] < read[2 * MAX_CALLS - 1] < trips[1] < read[2 * MAX_CALLS]
    assert replies == [str(n).encode() for n in range(1, len(read) + 1)]  # in order, chunk after chunk


def test_a_stalled_redis_fails_the_rest_of_a_large_turn_unsent(own_redis_url: str, tmp_path: Path) -> None:
    """The first round trip of a large turn gets no answer (Redis frozen): its calls' outcome is
    unknown, the calls after it are failed at once, not sent, so the turn costs one deadline."""
    with redis.Redis.from_url(own_redis_url) as sync:
        pid = int(sync.info("server")["process_id"])

    async def main() -> tuple[list[object], float]:
        client = Redis.from_url(own_redis_url)
        pipeline = ScriptPipeline(client, SCRIPT, timeout=0.5)
        await pipeline(["warm"], ["0"])
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            replies = await asyncio.gather(*(pipeline(["list"], [str(i)]) for i in range(MAX_CALLS + 10)),
                                           return_exceptions=True)
            took = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
        await client.aclose()
        return replies, took

    replies, took = asyncio.run(main())
    assert all(isinstance(reply, OutcomeUnknown) for reply in replies[:MAX_CALLS]), replies[0]
    unsent = replies[MAX_CALLS:]
    assert all(isinstance(reply, RedisConnectionError) and not isinstance(reply, OutcomeUnknown)
               and "not sent" in str(reply) for reply in unsent), unsent[0]
    assert took < 1.5, took

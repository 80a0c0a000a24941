"""The submit script's auto-pipelining, against a private Valkey of its own (it flushes scripts
and kills connections)."""

from __future__ import annotations

import asyncio

import redis
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from taskgate.producer.autopipeline import ScriptPipeline, pack

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

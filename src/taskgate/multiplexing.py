"""A Redis client whose commands share connections: those made during one event-loop turn go
to Redis together, as one write and one read on one pooled connection.

An API process serving thousands of requests at once would otherwise take a connection per
command in flight: past the pool's size the calls failed at once (redis-py 8's pool stops at
100 and raises "Too many connections", which read as Redis being down), and a burst that opens
hundreds of new connections spends its deadline on connecting. Multiplexed, a burst of 2,000
reads is a few writes on a few connections, and the pool (a ``BlockingConnectionPool``: a call
finding every connection busy waits for one, within its deadline) is sized for stalls, not for
the number of requests.

The reply parsing and the response callbacks are redis-py's own (``Redis.parse_response``).
Commands that hold or change their connection (blocking pops, ``MULTI``, ``SELECT``, ...) keep
a pooled connection of their own, as does a ``pipeline()``. A batch whose connection broke is
sent once more on a fresh one (a pooled connection can be stale after a Redis restart), as the
client's own retry did per command: every command taskgate sends is safe to run twice.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

#: Commands that block, or hold or change their connection's state: never share a connection.
OWN_CONNECTION = frozenset({
    "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP",
    "XREAD", "XREADGROUP", "WAIT", "WAITAOF", "MONITOR", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE",
    "SELECT", "AUTH", "HELLO", "RESET", "QUIT", "CLIENT", "MULTI", "EXEC", "DISCARD", "WATCH",
    "UNWATCH",
})

#: redis-py before 5.3 requires a command name of ``get_connection()`` (it picks nothing by it);
#: from 5.3 it is optional and passing one is deprecated.
_COMMAND = inspect.signature(ConnectionPool.get_connection).parameters.get("command_name")
_NAMES_COMMAND = _COMMAND is not None and _COMMAND.default is inspect.Parameter.empty

_Call = tuple[tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]


async def connection_of(pool: ConnectionPool) -> Connection:
    """A connection from ``pool``, as each redis-py version asks for it."""
    if _NAMES_COMMAND:
        return await pool.get_connection("EVALSHA")  # type: ignore[no-any-return, no-untyped-call, unused-ignore]
    return await pool.get_connection()  # type: ignore[no-any-return, no-untyped-call, unused-ignore]


#: A call waiting in a :class:`TurnBatch`.
C = TypeVar("C", bound=tuple[Any, ...])


class TurnBatch(Generic[C]):
    """Calls made during one event-loop turn, sent together at its end: :meth:`_enqueue` a call
    (a tuple whose last item is its caller's future), and :meth:`_send` gets the turn's calls,
    in a task of its own kept until it is done (:meth:`_drain` waits for those in flight)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch: list[C] = []
        self._sending: set[asyncio.Task[None]] = set()

    def _enqueue(self, call: C) -> None:
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append(call)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)  # keep a reference until it is done
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[C]) -> None:
        raise AssertionError("a TurnBatch sends its calls in _send")

    async def _drain(self) -> None:
        """Wait for the round trips in flight (their callers were answered or gave up)."""
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)


class Multiplexed(TurnBatch["_Call"], Redis):  # type: ignore[misc]  # redis-py's own bases disagree
    """``redis.asyncio.Redis`` whose commands of one event-loop turn share one round trip."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        name = args[0].upper() if isinstance(args[0], str) else args[0]
        if self.single_connection_client or name in OWN_CONNECTION:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._enqueue((args, options, future))
        return await future

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the client, once the round trips in flight have ended (their callers gave up
        or were answered): none is left pending on a closed pool."""
        await self._drain()
        await super().aclose(close_connection_pool)

    async def _send(self, batch: list[_Call]) -> None:
        for attempt in (1, 2):
            waited = [call for call in batch if not call[2].done()]  # skip callers that gave up
            if not waited:
                return
            try:
                await self._exchange(waited)
                return
            except RedisConnectionError as exc:  # the calls not yet answered are sent once more
                if attempt == 2:
                    fail(waited, exc)
            except BaseException as exc:
                fail(waited, exc)
                if not isinstance(exc, Exception):
                    raise
                return

    async def _exchange(self, batch: list[_Call]) -> None:
        pool = self.connection_pool
        connection = await connection_of(pool)
        try:
            await connection.send_packed_command(connection.pack_commands([args for args, _, _ in batch]))
            for args, options, future in batch:
                try:
                    reply = await self.parse_response(connection, args[0], **options)
                except ResponseError as error:  # the reply was read whole: the stream is intact
                    if not future.done():
                        future.set_exception(error)
                    continue
                if not future.done():
                    future.set_result(reply)
        except BaseException:
            await connection.disconnect()  # replies may be left unread: never reuse it
            raise
        finally:
            await pool.release(connection)


def fail(batch: Sequence[tuple[Any, ...]], exc: BaseException) -> None:
    """Fail every call of ``batch`` (each a tuple ending with its caller's future) still waited
    on with ``exc``."""
    for *_, future in batch:
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)

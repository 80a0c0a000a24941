"""Auto-pipelining of one Lua script: the calls made during one event-loop turn go to Redis
together, as one write and one read on one pooled connection, instead of a round trip each.

Under load an API process has many submissions in flight at once; sending their submit scripts
together is what keeps the enqueue path close to the cost of a bare ``LPUSH``. redis-py's
``Pipeline`` would do the same work at several times the CPU per command (and a ``SCRIPT EXISTS``
round trip per batch), so the commands are packed here and the connection, its timeouts and
the reply parser are redis-py's own.

Each round trip runs under one deadline (``timeout``), the same for every call in it; a round
trip that misses it before writing the calls fails them with ``TimeoutError`` (Redis never saw
them). Once the calls are written their outcome is unsure (Redis may have run them, its answer
held by a stalled server or a network): a deadline missed after writing, or a connection that
broke after it and a resend that does not answer either, fails them with :class:`OutcomeUnknown`.

Safe only for scripts that may run twice: a batch whose connection broke is sent once more on
a fresh connection (a pooled connection can be stale after a Redis restart), and calls that
found the script missing from Redis (``NOSCRIPT``) are sent again after ``SCRIPT LOAD``.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Sequence

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from ..multiplexing import TurnBatch, connection_of, fail
from ..records.scripts import Arg, AtSend, resolve
from .timeout import within


class OutcomeUnknown(RedisConnectionError):
    """The calls were written and no answer came: their deadline passed, or the connection broke
    and no resend answered. Redis may or may not have run them."""


def pack(*args: Arg) -> bytes:
    """One command in the Redis protocol (RESP)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = repr(arg).encode()  # as redis-py encodes numbers
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


#: Calls one round trip carries at most; more made in one event-loop turn go as several round
#: trips, one after the other, each reading its scripts' deadline as it leaves: Redis runs a
#: round trip's scripts one after the other, and the last of thousands would run past a
#: deadline read when the first left.
MAX_CALLS = 500

#: A call waiting for its round trip: keys, arguments, and its caller's future.
_Call = tuple[Sequence[str], Sequence[Arg | AtSend], "asyncio.Future[object]"]


class ScriptPipeline(TurnBatch[_Call]):
    """``await pipeline(keys, args)`` runs the script like ``EVALSHA`` and returns its reply (or
    raises its error); calls made in the same event-loop turn share one round trip."""

    def __init__(self, client: Redis, source: str, timeout: float,
                 observe: Callable[[float], object] | None = None) -> None:
        super().__init__()
        self.client = client
        self.source = source
        self.timeout = timeout
        self.observe = observe  # told each round trip's duration
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    def __call__(self, keys: Sequence[str], args: Sequence[Arg | AtSend]) -> asyncio.Future[object]:
        """Queue one call for the next flush (at the end of this event-loop turn); an
        :class:`~taskgate.records.scripts.AtSend` argument is read as its round trip starts."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._enqueue((keys, args, future))
        return future

    async def _send(self, calls: list[_Call]) -> None:
        calls = [call for call in calls if not call[2].done()]  # skip callers that gave up
        for start in range(0, len(calls), MAX_CALLS):
            failed = await self._answer(calls[start:start + MAX_CALLS])
            if failed is not None:  # no answer: the rest is not sent (a stalled Redis costs one deadline)
                fail(calls[start + MAX_CALLS:], RedisConnectionError(
                    f"not sent: the round trip before them got no answer ({failed})"))
                return

    async def _answer(self, calls: list[_Call]) -> Exception | None:
        """Send ``calls`` and answer their callers; the error of a round trip that failed."""
        missing, failed = await self._attempt(calls, load_first=False)
        if missing and failed is None:  # the script was flushed (or Redis restarted): load it, resend those
            _, failed = await self._attempt(missing, load_first=True)
        return failed

    async def _attempt(self, calls: list[_Call], load_first: bool) -> tuple[list[_Call], Exception | None]:
        """Send ``calls`` (after ``SCRIPT LOAD`` when ``load_first``) and answer their callers;
        return, unanswered, the calls that found no script (unless it was just loaded), or the
        error that failed them all."""
        try:
            if load_first:
                await self.client.script_load(self.source)
            replies = await self._round_trip(calls)
        except BaseException as exc:
            fail(calls, exc)
            if not isinstance(exc, Exception):
                raise
            return [], exc
        retry = [] if load_first else [i for i, reply in enumerate(replies)
                                       if isinstance(reply, NoScriptError)]
        skip = set(retry)
        _settle([(calls[i][2], reply) for i, reply in enumerate(replies) if i not in skip])
        return [calls[i] for i in retry], None

    async def _round_trip(self, calls: list[_Call]) -> list[object]:
        """Send ``calls`` in one write and read their replies (an error reply is returned as
        its exception) within ``timeout``; retried once on a fresh connection if the connection
        broke."""
        started = time.perf_counter()
        unsure = False  # a connection broke after the commands were written: Redis may have run them
        written: list[bool] = []  # filled once the commands start going out: Redis may run them
        packed: list[bytes] = []  # the commands, packed once a connection is ready (see _exchange)
        try:
            async with within(self.timeout):  # one timer for the batch, none per reply
                for attempt in (1, 2):
                    try:
                        return await self._exchange(calls, written, packed)
                    except RedisConnectionError as exc:
                        unsure = unsure or isinstance(exc, _Unanswered)
                        if attempt == 2:
                            raise
        except (TimeoutError, RedisConnectionError) as exc:
            if unsure:
                raise OutcomeUnknown("the connection broke after the calls were sent and no resend was "
                                     f"answered ({exc or type(exc).__name__})") from exc
            if written and isinstance(exc, TimeoutError):
                raise OutcomeUnknown(f"no answer within {self.timeout:g}s to calls already sent") from exc
            raise
        finally:
            if self.observe is not None:
                self.observe(time.perf_counter() - started)
        raise AssertionError("unreachable")

    async def _exchange(self, calls: list[_Call], written: list[bool], packed: list[bytes]) -> list[object]:
        pool = self.client.connection_pool
        connection = await connection_of(pool)
        try:
            # Connected first (at once when it is): a new connection's connect is not the scripts' time.
            await connection.connect()  # type: ignore[no-untyped-call, unused-ignore]
            if not packed:  # packed now, so an AtSend argument (a script's deadline) is read as it leaves
                packed.append(b"".join(pack("EVALSHA", self.sha, len(keys), *keys, *resolve(args))
                                       for keys, args, _ in calls))
            written.append(True)
            await connection.send_packed_command(packed[0], check_health=False)
            replies: list[object] = []
            for _ in calls:
                try:
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as error:  # the reply was read whole: the stream is intact
                    replies.append(error)
                except RedisConnectionError as exc:  # written, maybe run, never answered
                    raise _Unanswered(str(exc)) from exc
            return replies
        except BaseException:
            await connection.disconnect()  # replies may be left unread: never reuse it
            raise
        finally:
            await pool.release(connection)


class _Unanswered(RedisConnectionError):
    """The connection broke after the commands were written."""


def _settle(outcomes: list[tuple[asyncio.Future[object], object]]) -> None:
    """Hand each caller its reply (an error reply as its exception), unless it gave up."""
    for future, reply in outcomes:
        if future.done():  # its caller gave up (deadline)
            continue
        if isinstance(reply, Exception):
            future.set_exception(reply)
        else:
            future.set_result(reply)

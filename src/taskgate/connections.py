"""Every Redis client taskgate makes, from one place, with its timeouts named.

* :func:`fail_fast` (asyncio, the producer's): bounded sockets and one immediate retry only
  for a broken connection (a pooled connection from before a Redis restart), never for a
  timeout; every script taskgate sends is safe to run twice. Its commands of one event-loop
  turn share one round trip (:mod:`taskgate.multiplexing`), and its pool holds at most
  ``TASKGATE_REDIS_MAX_CONNECTIONS`` connections: a call finding them all busy waits for one
  (within the same deadline as the call) rather than failing at once as redis-py's own pool
  does past its limit (100 from redis-py 8), so a full pool is a queue, never a 503.
* :func:`events` (asyncio, the producer's one pub/sub connection): bounded connects and writes,
  no retry at all, so a broken connection is reported instead of silently reconnected with
  the messages in between lost.
  An API process's cache of verified API keys listens for revocations on one more, built
  the same way.
* :func:`blocking` (the worker, its keeper, the CLI, ``doctor``): bounded sockets.
"""

from __future__ import annotations

from redis import Redis
from redis.asyncio import BlockingConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from .multiplexing import Multiplexed

#: A worker's record writes (each also retried for 30 s, see ``worker.runtime``).
WORKER_TIMEOUT = 10.0
#: The worker keeper's calls: heartbeat, reap, release.
KEEPER_TIMEOUT = 5.0
#: The CLI's calls (API keys).
CLI_TIMEOUT = 5.0
#: The key-layout upgrade at start: one ``SCAN`` over the whole keyspace.
UPGRADE_TIMEOUT = 30.0
#: ``TASKGATE_REDIS_MAX_CONNECTIONS``'s default: connections of one process's :func:`fail_fast`
#: pool. Commands share them (one round trip per event-loop turn, ``multiplexing``; submits
#: through ``producer.autopipeline``), so a handful carry thousands of requests at once; the
#: rest are for a slow Redis, each round trip still in flight holding one.
MAX_CONNECTIONS = 50  # keep equal to Settings.redis_max_connections
#: What ``CLIENT LIST`` calls the producer's pub/sub connection.
EVENTS_CLIENT_NAME = "taskgate-events"
#: What ``CLIENT LIST`` calls an API process's subscription to API key revocations
#: (``api.keycache``).
KEYS_CLIENT_NAME = "taskgate-keys"


def blocking(url: str, timeout: float) -> Redis:
    """A blocking client whose connects and calls each last at most ``timeout`` seconds."""
    return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def backstop(timeout: float) -> float:
    """The asyncio clients' own socket timeouts, for calls whose deadline is ``timeout``. Each
    call of theirs runs under its deadline (``producer.timeout.within``), which gives back the
    time a busy event loop ran late, up to a few times itself; the socket's wall-clock timeouts
    are a backstop behind it, as long as that deadline can get, so a burst that keeps the loop
    busy does not fail a connect or a read that its deadline would have waited for."""
    from .producer.timeout import MAX_LAG_FACTOR

    return timeout * (1 + MAX_LAG_FACTOR)


def fail_fast(url: str, timeout: float, max_connections: int = MAX_CONNECTIONS) -> AsyncRedis:
    """An asyncio client whose every call fails fast (see the module's docstring); a call that
    finds all ``max_connections`` busy waits for one (within its deadline)."""
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=backstop(timeout), socket_timeout=backstop(timeout),
        socket_connect_timeout=backstop(timeout),
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)), health_check_interval=0)
    return Multiplexed.from_pool(pool)


def events(url: str, timeout: float, name: str = EVENTS_CLIENT_NAME) -> AsyncRedis:
    """The client of the producer's shared pub/sub connection (see the module's docstring), or
    of another pub/sub connection built the same way, called ``name`` in ``CLIENT LIST``."""
    return AsyncRedis.from_url(url, socket_timeout=timeout, socket_connect_timeout=backstop(timeout),
                               retry=Retry(NoBackoff(), 0, supported_errors=()),
                               health_check_interval=0, client_name=name)


def feed(url: str, timeout: float) -> AsyncRedis:
    """The client of the live task feed's pattern subscription (``producer.feed``): no read
    timeout (it waits for changes), a connect deadline (:func:`backstop`: a burst of feeds
    opened at once keeps the loop busy while it connects)."""
    return AsyncRedis.from_url(url, socket_timeout=None, socket_connect_timeout=backstop(timeout),
                               retry=Retry(NoBackoff(), 0, supported_errors=()),
                               health_check_interval=0, client_name="taskgate-feed")

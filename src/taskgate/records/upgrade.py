"""Moving records written by an earlier key layout to this one, once per Redis.

Layout 1 (taskgate before the record's keys took a hash tag) kept a task's record at
``taskgate:task:<id>`` and an Idempotency-Key at ``taskgate:idem:<owner>:<key>``. Layout 2
(:mod:`.keys`) writes ``taskgate:task:{<id>}`` and ``taskgate:idem:{<owner>:<key>}``. The API
and the worker call :func:`upgrade` as they start: it renames every layout-1 key (with its
TTL) and then notes the layout in ``taskgate:layout``, so later starts skip the scan. Ids in
the indexes, the delayed set, the dead letters and the in-flight sets are the same in both.
Processes of an older version must be stopped first: they would go on writing layout 1.
"""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import ResponseError

from .. import connections
from . import keys

log = logging.getLogger("taskgate.records")

#: The layout :mod:`.keys` writes.
LAYOUT = 2


def _renames(client: Redis, prefix: str, new: str) -> int:
    moved = 0
    for raw in client.scan_iter(match=f"{prefix}*", count=1000):
        old = raw.decode(errors="replace")
        rest = old.removeprefix(prefix)
        if rest.startswith("{") and rest.endswith("}"):
            continue  # already layout 2
        try:
            moved += bool(client.renamenx(old, new.format(rest)))
        except ResponseError:
            continue  # renamed meanwhile by another process upgrading
    return moved


def upgrade_at(url: str, timeout: float) -> int:
    """:func:`upgrade` the Redis at ``url``: its layout is read within ``timeout`` (a stalled
    Redis costs a starting process no more than its usual deadline), the rare scan of an older
    layout gets ``connections.UPGRADE_TIMEOUT`` per call."""
    quick = connections.blocking(url, timeout)
    try:
        if quick.get(keys.LAYOUT) == str(LAYOUT).encode():
            return 0
    finally:
        quick.close()
    client = connections.blocking(url, connections.UPGRADE_TIMEOUT)
    try:
        return upgrade(client)
    finally:
        client.close()


def upgrade(client: Redis) -> int:
    """Rename layout-1 keys to layout 2, once per Redis; returns how many were renamed."""
    if client.get(keys.LAYOUT) == str(LAYOUT).encode():
        return 0
    moved = _renames(client, keys.RECORD_PREFIX, keys.RECORD_PREFIX + "{{{}}}")
    moved += _renames(client, keys.IDEMPOTENCY_PREFIX, keys.IDEMPOTENCY_PREFIX + "{{{}}}")
    client.set(keys.LAYOUT, str(LAYOUT))
    if moved:
        log.warning("taskgate: moved %d record(s) and Idempotency-Key(s) to key layout %d", moved, LAYOUT)
    return moved

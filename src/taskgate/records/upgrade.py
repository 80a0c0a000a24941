"""Moving records written by an earlier key layout to this one, once per Redis.

Layout 1 (taskgate before the record's keys took a hash tag) kept a task's record at
``taskgate:task:<id>`` and an Idempotency-Key at ``taskgate:idem:<owner>:<key>``. Layout 2
wrote ``taskgate:task:{<id>}`` and ``taskgate:idem:{<owner>:<key>}``, where two owners could
meet (``alice`` + ``x:k``, ``alice:x`` + ``k``). Layout 3 (:mod:`.keys`) keeps the records of
layout 2 and hashes the owner and key of an Idempotency-Key (:func:`.keys.idempotency`).

The API and the worker call :func:`upgrade` as they start: it renames every layout-1 record,
and every Idempotency-Key of layout 1 or 2 whose owner and key can be told apart (one ``:``
between them, as with every API key's owner), each with its TTL; an ambiguous one is left to
expire (within a day: a retry with it until then makes a new task). It then notes the layout
in ``taskgate:layout``, so later starts skip the scan. Ids in the indexes, the delayed set,
the dead letters and the in-flight sets are the same in all. Processes of an older version
must be stopped first: they would go on writing the older forms.
"""

from __future__ import annotations

import logging

from redis import Redis
from redis.exceptions import ResponseError

from .. import connections
from . import keys

log = logging.getLogger("taskgate.records")

#: The layout :mod:`.keys` writes.
LAYOUT = 3


def _renames(client: Redis, prefix: str, new: str) -> int:
    moved = 0
    for raw in client.scan_iter(match=f"{prefix}*", count=1000):
        old = raw.decode(errors="replace")
        rest = old.removeprefix(prefix)
        if rest.startswith("{") and rest.endswith("}"):
            continue  # already braced (layout 2 or 3)
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


def _idempotency_keys(client: Redis) -> int:
    """Rename Idempotency-Keys of layouts 1 and 2 (``<owner>:<key>``, braced or not) whose
    owner and key one ``:`` tells apart; the others expire where they are."""
    moved = 0
    for raw in client.scan_iter(match=f"{keys.IDEMPOTENCY_PREFIX}*", count=1000):
        old = raw.decode(errors="replace")
        rest = old.removeprefix(keys.IDEMPOTENCY_PREFIX)
        if rest.startswith("{") and rest.endswith("}"):
            rest = rest[1:-1]
        if rest.count(":") != 1:
            continue  # layout 3 (a hash: no ':'), or an owner and key that cannot be told apart
        owner, key = rest.split(":")
        try:
            moved += bool(client.renamenx(old, keys.idempotency(owner, key)))
        except ResponseError:
            continue  # renamed meanwhile by another process upgrading
    return moved


def upgrade(client: Redis) -> int:
    """Rename keys of layouts 1 and 2 to layout 3, once per Redis; returns how many were renamed."""
    found = client.get(keys.LAYOUT)
    if found == str(LAYOUT).encode():
        return 0
    moved = 0
    if found != b"2":  # layout 2's records are layout 3's
        moved += _renames(client, keys.RECORD_PREFIX, keys.RECORD_PREFIX + "{{{}}}")
    moved += _idempotency_keys(client)
    client.set(keys.LAYOUT, str(LAYOUT))
    if moved:
        log.warning("taskgate: moved %d record(s) and Idempotency-Key(s) to key layout %d", moved, LAYOUT)
    return moved

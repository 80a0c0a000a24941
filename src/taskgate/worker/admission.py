"""A worker keeper's part in admission (``records/scripts/admission.lua``).

The scripts that end runs admit the next ones themselves; what is left for keepers, every
pass of every worker's keeper (each step atomic in Redis, so any number of keepers share it):

* **admit**: runs whose lane's rate limit now lets them go (``taskgate:admit-due``);
* **outbox**: when the broker is not the records' Redis, publish the admitted runs the scripts
  could not push (``taskgate:outbox``), one keeper at a time;
* **reclaim**: now and then, slots held by runs that hold them no more (a record changed
  outside the scripts) are given back, so no slot leaks.

And at start, :func:`publish_declared`: the limits this worker's tasks declare, for the scripts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable
from typing import cast

from celery import Celery
from redis import Redis

from .. import limits
from ..brokers.kombu import publish_blocking
from ..brokers.message import PRIORITY_STEPS, queue_for_priority
from ..config import Settings
from ..records import keys, scripts
from ..registry import TaskSpec

log = logging.getLogger("taskgate.admission")

#: Due lanes one pass admits from, at most (each admits up to admission.lua's ADMIT_MAX runs).
ADMIT_BATCH = 50
#: Admitted runs one pass publishes from the outbox, at most.
OUTBOX_BATCH = 100


def publish_declared(client: Redis, catalogue: Collection[TaskSpec], settings: Settings) -> None:
    """Tell the admission scripts the limits ``catalogue`` declares and whether fair queueing
    is on (:func:`taskgate.limits.publish`)."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.FAIR)
    limits.publish(pipe, catalogue)
    limits.publish_fair(pipe, settings)
    before = pipe.execute()[0]
    # The last worker started decides for every worker: say so when this one changes it (loudly
    # when it turns fair queueing off: a worker started without TASKGATE_FAIR_BY did).
    now = client.get(keys.FAIR)
    if now != before:
        log.log(logging.WARNING if before else logging.INFO,
                "fair queueing by owner is now %s for every worker, as this worker's TASKGATE_FAIR_BY "
                "says (it was %s): start every worker with the same setting", _fair(now), _fair(before))


def _fair(window: bytes | str | None) -> str:
    """Fair queueing as ``taskgate:fair`` holds it, in words."""
    if not window:
        return "off"
    return f"on (window {window.decode() if isinstance(window, bytes) else window})"


class Admitter:
    """Admission's share of one keeper (blocking client, keeper thread)."""

    def __init__(self, app: Celery, client: Redis, *, inline: bool, timeout: float) -> None:
        self.app, self.client, self.inline, self.timeout = app, client, inline, timeout
        self.scripts = scripts.Scripts(client)
        #: When (monotonic) the next rate-held lane is due, as the last pass saw.
        self.next_at: float | None = None

    def admit_due(self) -> int:
        """Admit the runs whose rate limit lets them go now; how many. Notes when the next is
        due (:meth:`wait_hint`)."""
        admitted, wait = self.scripts(scripts.admit(ADMIT_BATCH))
        self.next_at = None if wait is None else time.monotonic() + wait
        if admitted:
            log.debug("taskgate keeper: admitted %d run(s)", admitted)
        return admitted

    def wait_hint(self, longest: float) -> float:
        """How long the keeper may sleep before a rate lets the next waiting run go, at most
        ``longest``: a 50/s limit is kept by waking every 20 ms, not by the 0.5 s pass (GCRA
        gives no catch-up for a late admission beyond the burst)."""
        if self.next_at is None:
            return longest
        return max(0.0, min(longest, self.next_at - time.monotonic()))

    def publish_outbox(self) -> int:
        """Publish admitted runs to a broker other than the records' Redis (one keeper at a
        time); how many. A run is taken off the outbox once the broker took it: a keeper that
        dies between the two leaves it to be published again (at least once)."""
        if self.inline or not self.client.llen(keys.OUTBOX):
            return 0
        if not self.client.set(keys.OUTBOX_LOCK, "1", nx=True, ex=max(5, int(self.timeout * OUTBOX_BATCH))):
            return 0
        sent = 0
        try:
            for raw in cast(list[bytes], self.client.lrange(keys.OUTBOX, 0, OUTBOX_BATCH - 1)):
                task_id = raw.decode()
                payload = cast(bytes | None, self.client.hget(keys.record(task_id), "message"))
                if payload:
                    from ..producer.dispatch import outbox_parts

                    queue, parts = outbox_parts(payload)
                    publish_blocking(self.app, queue, parts, self.timeout)
                    self.client.hdel(keys.record(task_id), "message")
                    sent += 1
                self.client.lrem(keys.OUTBOX, 1, task_id)
        finally:
            self.client.delete(keys.OUTBOX_LOCK)
        return sent

    def reclaim(self, queues: Iterable[str]) -> int:
        """Give back slots held by runs that hold them no more, and the fair turns of the lists
        of ``queues``; how many."""
        names = {raw.decode() for raw in cast(list[bytes], self.client.hkeys(keys.LIMITS_DECLARED))}
        names |= {raw.decode() for raw in cast(list[bytes], self.client.hkeys(keys.LIMITS_OVERRIDE))}
        reclaimed = sum(self.scripts(scripts.reclaim(name)) for name in sorted(names))
        lists = [queue_for_priority(queue, step) for queue in queues for step in PRIORITY_STEPS]
        reclaimed += sum(self.scripts(scripts.reclaim(keys.fair_group(key), "turn")) for key in lists)
        if reclaimed:
            log.warning("taskgate keeper: %d concurrency slot(s) held by runs no longer holding them "
                        "were given back", reclaimed)
        return reclaimed

"""Loses nothing: each worker's keeper thread (heartbeats, releasing due tasks, reaping).

Celery with late acks keeps a running task's message in kombu's ``unacked`` hash; kombu puts
it back only after ``visibility_timeout``, whether its worker died or is still busy. taskgate
instead keeps that timeout long and lets every worker's main process run a keeper thread:

* **heartbeat**: every 2 s, ``taskgate:worker:<hostname>:<pid>`` is set (TTL 10 s) to the delivery
  tags of the messages this worker holds (reserved or running), the queues it consumes and the
  tasks it has;
* **reap**: every 5 s, one worker (lock ``taskgate:reaper``) requeues, with kombu's own
  ``restore_by_tag``, each message unacked for over 15 s that no live worker holds and whose
  task no live process runs: the tasks of a killed worker run again within about 30 s, and a
  long task on a live worker is never handed to a second one, even while that worker's main
  process is frozen (the pool process running it keeps ``taskgate:alive:{<id>}`` set, see
  ``runtime``);
* **release**: every 0.5 s, due delayed tasks and retries move from ``taskgate:delayed`` to
  their queue in one atomic script, so a long countdown runs exactly once;
* **expire**: every 0.5 s too, runs whose expiry (``expires``) passed before they started
  (queued, delayed, retrying, waiting for admission) end ``expired``, from
  ``taskgate:expiring`` (a message of one already in a queue is then skipped at START);
* **admission**: runs whose rate limit lets them go are admitted, runs admitted for a broker
  other than the records' Redis are published, and every 5 s leaked slots are reclaimed (see
  ``admission``);
* **schedules**: due schedules fire, each tick once (see ``scheduler``); the keeper wakes at the
  next tick when that comes before its next 0.5 s pass;
* **webhooks**: beside it, in a process of its own that the keeper starts (and starts again should
  it die), a deliverer sends the due webhook deliveries (see ``webhooks``, ``webhook_process``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any, cast

import orjson
from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutdown
from celery.worker import state as worker_state
from redis.exceptions import RedisError

from .. import connections
from ..brokers import parks_delays
from ..config import Settings
from ..constants import ANONYMOUS, HEARTBEAT_INTERVAL, HEARTBEAT_TTL, REAP_GRACE
from ..records import keys, scripts
from ..records.upgrade import upgrade_at
from ..records.workers import Heartbeat, heartbeats
from ..registry import exposed
from .admission import Admitter, publish_declared
from .celery_app import settings_of
from .scheduler import Firer, sync_declared
from .webhook_process import DelivererProcess

log = logging.getLogger("taskgate.recovery")

TICK = 0.5
REAP_INTERVAL = 5.0
#: Delayed tasks moved to their queues per keeper tick, at most.
RELEASE_BATCH = 100
#: Runs past their expiry ended per keeper tick, at most.
EXPIRE_BATCH = 500


def held() -> tuple[list[str], int]:
    """Delivery tags of the messages this worker process holds (reserved or running), and how
    many of them run."""
    for _ in range(5):  # the sets change under us; copying them may need another try
        try:
            active = list(worker_state.active_requests)
            requests = list(worker_state.reserved_requests) + active
            break
        except RuntimeError:
            continue
    else:
        requests, active = [], []
    tags = {getattr(request.message, "delivery_tag", None) for request in requests}
    return sorted(str(tag) for tag in tags if tag), len(active)


class Keeper(threading.Thread):
    """The keeper thread of one worker main process."""

    def __init__(self, app: Celery, hostname: str, settings: Settings,
                 queues: list[str] | None = None, concurrency: int = 0) -> None:
        super().__init__(name="taskgate-keeper", daemon=True)
        self.app, self.hostname, self.settings = app, hostname, settings
        self.queues = sorted(queues or [settings.default_queue])
        self.tasks = sorted(name for name in app.tasks if not name.startswith("celery."))
        self.concurrency = concurrency
        self.client = connections.blocking(settings.require_redis_url(), connections.KEEPER_TIMEOUT)
        self.scripts = scripts.Scripts(self.client)
        self.stopping = threading.Event()
        self.last_error = time.monotonic()  # reap only after a calm spell: see _reap
        self.broker_is_redis = settings.broker_is_redis
        self.parks_delays = parks_delays(settings)
        self._connection: Any = None
        self.firer = Firer(app, self.client, settings, self.tasks)
        self.admitter = Admitter(app, self.client, inline=self.parks_delays, timeout=settings.backend_timeout)
        self.deliverer = DelivererProcess(settings)

    def start(self) -> None:
        """Start the thread, and the webhook deliverer's process beside it."""
        super().start()
        self.deliverer.start()

    def run(self) -> None:
        next_beat = next_reap = next_pass = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                if now < next_pass:  # woken early, when a rate lets a waiting run go: only that
                    self.admitter.admit_due()
                else:
                    self.one_pass(now, now >= next_beat, now >= next_reap)
                    next_pass = now + self.firer.wait_hint(TICK)
                    if now >= next_beat:
                        next_beat = now + HEARTBEAT_INTERVAL
                    if now >= next_reap:
                        next_reap = now + REAP_INTERVAL
            except (RedisError, OSError) as exc:
                self.last_error = time.monotonic()
                self.firer.next_at = self.firer.alive_since = None  # after a failure, wait a whole pass
                self.admitter.next_at = None
                next_pass = time.monotonic() + TICK  # after a failure, wait a whole pass
                log.warning("taskgate keeper: %s", exc)
                self._reset_connection()
            except Exception:  # a keeper that dies silently would lose the guarantees
                self.last_error = time.monotonic()
                self.firer.next_at = self.firer.alive_since = None
                self.admitter.next_at = None
                next_pass = time.monotonic() + TICK
                log.exception("taskgate keeper: unexpected error")
                self._reset_connection()
            self.stopping.wait(self.admitter.wait_hint(max(0.0, next_pass - time.monotonic())))

    def one_pass(self, now: float, beat: bool, reap: bool) -> None:
        """One whole pass: heartbeat (when ``beat``), release, expire, admit, publish the
        outbox, fire schedules, and (when ``reap``) requeue a dead worker's messages and reclaim
        leaked slots."""
        if beat:
            self.heartbeat()
            self.deliverer.check()
        if self.parks_delays:
            self.release()
        self.expire()  # after release: the runs it found past their expiry end in this pass
        self.admitter.admit_due()
        self.admitter.publish_outbox()
        self.firer.fire_due()
        if reap:
            if self.broker_is_redis:
                self.reap()
            self.admitter.reclaim(self.queues)

    def stop(self) -> None:
        """Stop the thread and withdraw this worker's heartbeat."""
        self.stopping.set()
        self.join(5)
        self.deliverer.stop()
        with contextlib.suppress(RedisError):
            self.client.delete(keys.worker(self.hostname))
        self._reset_connection()

    def heartbeat(self) -> None:
        """Say which messages this worker holds and how many of them run, which queues it
        consumes and which tasks it has, for the next HEARTBEAT_TTL seconds."""
        tags, active = held()
        beat = Heartbeat(tuple(tags), tuple(self.queues), tuple(self.tasks), time.time(),
                         self.concurrency, active)
        self.client.set(keys.worker(self.hostname), beat.encode(), ex=HEARTBEAT_TTL)

    def release(self) -> int:
        """Queue the delayed tasks and retries that are due."""
        now = time.time()
        due = [raw.decode() for raw in cast(list[bytes], self.client.zrangebyscore(
            keys.DELAYED, "-inf", repr(now), start=0, num=RELEASE_BATCH))]
        if not due:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for task_id in due:
            pipe.hget(keys.record(task_id), "queue")
        queues = [queue.decode() if queue else None for queue in pipe.execute()]
        moved = self.scripts(scripts.release(now, list(zip(due, queues, strict=True))))
        if moved:
            log.info("taskgate keeper: released %d due task(s)", moved)
        return moved

    def expire(self) -> int:
        """End the runs whose expiry has passed and that have not started (``expired``); drop
        from the expiring set the ids of those that started or ended meanwhile."""
        now = time.time()
        due = [raw.decode() for raw in cast(list[bytes], self.client.zrangebyscore(
            keys.EXPIRING, "-inf", repr(now), start=0, num=EXPIRE_BATCH))]
        if not due:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for task_id in due:
            pipe.hget(keys.record(task_id), "owner")
        owners = [owner.decode() if owner else ANONYMOUS for owner in pipe.execute()]
        # an 'owner' reply (the record's owner changed since that read) is tried again next pass
        replies = self.scripts.many([scripts.expire(task_id, owner, now=now, ttl=self.settings.result_ttl)
                                     for task_id, owner in zip(due, owners, strict=True)])
        ended = sum(reply.verdict == "expired" for reply in replies)
        if ended:
            log.info("taskgate keeper: %d task(s) expired before they started", ended)
        return ended

    def reap(self) -> int:
        """Requeue messages held by no live worker (their worker died)."""
        if time.monotonic() - self.last_error < HEARTBEAT_TTL:
            return 0  # after an outage, let every worker heartbeat again first
        stale = cast(list[bytes], self.client.zrangebyscore(keys.KOMBU_UNACKED_INDEX, "-inf",
                                                            time.time() - REAP_GRACE))
        if not stale or not self.client.set(keys.REAPER_LOCK, self.hostname, nx=True, ex=int(REAP_INTERVAL)):
            return 0
        held: set[str] = set()
        for beat in heartbeats(self.client).values():
            held.update(beat.tags)
        orphans = self.not_running([tag.decode() for tag in stale if tag.decode() not in held])
        if not orphans:
            return 0
        qos = self._channel().qos
        for tag in orphans:
            qos.restore_by_tag(tag)
        log.warning("taskgate keeper: requeued %d task(s) of dead worker(s)", len(orphans))
        return len(orphans)

    def not_running(self, tags: list[str]) -> list[str]:
        """The ``tags`` whose task no live process is running (no ``taskgate:alive:{<id>}``)."""
        if not tags:
            return []
        payloads = cast(list[bytes | None], self.client.hmget(keys.KOMBU_UNACKED, tags))
        ids: dict[str, str] = {}
        for tag, payload in zip(tags, payloads, strict=True):
            try:
                task_id = orjson.loads(payload)[0]["headers"]["id"] if payload else None
            except (orjson.JSONDecodeError, LookupError, TypeError):
                task_id = None  # not a Celery message we can read: nothing marks it alive
            if isinstance(task_id, str):
                ids[tag] = task_id
        pipe = self.client.pipeline(transaction=False)
        for task_id in ids.values():
            pipe.exists(keys.alive(task_id))
        kept = {tag for tag, running in zip(ids, pipe.execute(), strict=True) if running}
        if kept:
            log.info("taskgate keeper: %d task(s) of unresponsive worker(s) still running, left alone",
                     len(kept))
        return [tag for tag in tags if tag not in kept]

    def _channel(self) -> Any:
        if self._connection is None:
            self._connection = self.app.connection_for_write()
        return self._connection.default_channel

    def _reset_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # best effort while handling a failure
                self._connection.release()
            self._connection = None


_keeper: Keeper | None = None


@worker_init.connect
def _upgrade_records(sender: Any = None, **_: Any) -> None:
    """Before consuming: move records an earlier version wrote to this key layout."""
    settings = settings_of(sender.app)
    upgrade_at(settings.require_redis_url(), settings.backend_timeout)


@worker_ready.connect
def _start_keeper(sender: Any = None, **_: Any) -> None:
    global _keeper
    app = sender.app
    # Unique per process even if two workers share a node name.
    hostname = f"{sender.hostname}:{os.getpid()}"
    queues = [queue.name for queue in getattr(sender.task_consumer, "queues", [])]
    concurrency = getattr(getattr(sender, "controller", None), "concurrency", 0)
    _keeper = Keeper(app, hostname, settings_of(app), queues,
                     concurrency if isinstance(concurrency, int) else 0)
    try:
        sync_declared(_keeper.client, _keeper.settings, exposed())
        publish_declared(_keeper.client, list(exposed().values()), _keeper.settings)
    except RedisError as exc:  # the next worker start syncs them
        log.warning("taskgate: declared schedules and limits not synced: %s", exc)
    _keeper.start()
    log.info("taskgate keeper started for %s", hostname)


@worker_shutdown.connect
def _stop_keeper(**_: Any) -> None:
    if _keeper is not None:
        _keeper.stop()

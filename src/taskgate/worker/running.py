"""Inside a running task: this process's record client (:func:`records`), the pulse that keeps
running tasks marked alive (:func:`pulse`), and what a task calls while it runs
(:func:`report_progress`, :func:`cancel_requested`, :func:`raise_if_cancelled`)."""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from .. import connections, tracing
from ..config import Settings
from ..constants import ANONYMOUS, HEARTBEAT_INTERVAL, HEARTBEAT_TTL
from ..exceptions import TaskCancelled
from ..records import keys, scripts
from ..records.scripts import Call, Moved, Scripts

log = logging.getLogger("taskgate.worker")

T = TypeVar("T")

#: Seconds between two progress writes of one task (the last one is always written).
PROGRESS_INTERVAL = 0.2
#: Seconds between two reads of the cancel flag by :func:`cancel_requested`.
CANCEL_CHECK_INTERVAL = 0.25


#: Worker-side record writes ride out a Redis blip for this long before the task is requeued.
_patient = retry(
    retry=retry_if_exception_type((RedisConnectionError, RedisTimeoutError)),
    stop=stop_after_delay(30),
    wait=wait_exponential(multiplier=0.2, max=2),
    reraise=True,
)


class Records:
    """This worker process's Redis client and scripts (made after fork, per pid)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = connections.blocking(settings.require_redis_url(), connections.WORKER_TIMEOUT)
        self.scripts = Scripts(self.client)
        self._patient_scripts = _patient(self.scripts)
        self.pid = os.getpid()
        #: The owner of each task this process is running (read once, at its start).
        self.owners: dict[str, str] = {}

    def run(self, call: Call[T]) -> T:
        """Run a script call, riding out a Redis blip (a script is safe to run twice)."""
        return self._patient_scripts(call)

    @_patient
    def owner(self, task_id: str) -> str:
        """The owner of a task (whose in-flight set its end updates); set once, at submission."""
        if task_id not in self.owners:
            owner = cast(bytes | None, self.client.hget(keys.record(task_id), "owner"))
            return owner.decode() if owner else ANONYMOUS
        return self.owners[task_id]

    def move(self, call: Call[Moved]) -> Moved:
        """Run a guarded transition (:func:`~taskgate.records.scripts.succeeded` and its kin);
        one the record's state refuses (a duplicate delivery, a late write) changes nothing and
        is logged."""
        moved = self.run(call)
        if not moved.changed:
            log.info("task %s: %s not recorded: its record is %s", call.args[0], moved.move,
                     moved.state or "gone")
        return moved


_records: Records | None = None


def records(settings: Settings | None = None) -> Records:
    """The record client of this process (made on first use, from ``settings``: the worker's
    Celery app's, see :func:`~taskgate.worker.celery_app.settings_of`)."""
    global _records
    if _records is None or _records.pid != os.getpid():
        if settings is None:
            raise RuntimeError("taskgate's record client is made by the first task this process runs")
        _records = Records(settings)
    return _records


def worker_settings() -> Settings | None:
    """The settings of this worker process's tasks, once one ran here (else None)."""
    return _records.settings if _records is not None and _records.pid == os.getpid() else None


@dataclass
class Running:
    task_id: str
    last_progress: float = 0.0
    last_cancel_check: float = 0.0
    cancel: bool = False
    #: The quarters of its progress reached (0-4), each an event of its trace (``tracing``).
    quarters: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


current: contextvars.ContextVar[Running | None] = contextvars.ContextVar("taskgate_task", default=None)


class Pulse(threading.Thread):
    """In the process running tasks (a pool process): keeps ``taskgate:alive:{<id>}`` fresh for
    each task it runs, so the reaper never hands a running task to a second worker, even while
    the worker's main process (whose keeper heartbeats the delivery tags) is frozen. The START
    script sets the mark and the script that ends the task deletes it: no round trip of its own
    per task."""

    def __init__(self, node: str) -> None:
        super().__init__(name="taskgate-pulse", daemon=True)
        self.node = node
        self.running: set[str] = set()
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def enter(self, task_id: str) -> None:
        with self.lock:
            self.running.add(task_id)

    def leave(self, task_id: str) -> None:
        """Stop refreshing the mark (ended, it is gone; parked or requeued, it expires)."""
        with self.lock:
            self.running.discard(task_id)

    def run(self) -> None:
        while True:
            time.sleep(HEARTBEAT_INTERVAL)
            with self.lock:
                running = list(self.running)
            if not running:
                continue
            try:
                pipe = records().client.pipeline(transaction=False)
                for task_id in running:
                    pipe.set(keys.alive(task_id), self.node, ex=HEARTBEAT_TTL)
                pipe.execute()
            except RedisError as exc:
                log.warning("taskgate pulse: could not mark %d running task(s) alive (%s)", len(running), exc)


_pulse: Pulse | None = None


def pulse(node: str) -> Pulse:
    """This process's pulse thread (started on first use, again after a fork)."""
    global _pulse
    if _pulse is None or _pulse.pid != os.getpid():
        _pulse = Pulse(node)
        _pulse.start()
    return _pulse


def report_progress(done: float, total: float, message: str | None = None) -> None:
    """Publish how far the running task is; shown as ``{done, total, percent, message}``.

    Cheap to call in a loop: writes at most every 0.2 s, and always when ``done >= total``.
    Outside a task it does nothing.
    """
    running = current.get()
    if running is None:
        return
    now = time.monotonic()
    if done < total and now - running.last_progress < PROGRESS_INTERVAL:
        return
    running.last_progress = now
    percent = round(100.0 * done / total, 2) if total else 100.0
    progress = {"done": done, "total": total, "percent": percent, "message": message}
    rec = records()
    rec.move(scripts.progress(running.task_id, rec.owner(running.task_id), orjson.dumps(progress)))
    if percent >= 25 * (running.quarters + 1):  # a milestone: its trace shows 25, 50, 75 and 100 %
        running.quarters = min(4, int(percent // 25))
        tracing.event("taskgate.progress", {"taskgate.progress.percent": percent})


def cancel_requested() -> bool:
    """True once someone asked to cancel the running task (checked at most every 0.25 s)."""
    running = current.get()
    if running is None:
        return False
    now = time.monotonic()
    if not running.cancel and now - running.last_cancel_check >= CANCEL_CHECK_INTERVAL:
        running.last_cancel_check = now
        flag = records().client.hget(keys.record(running.task_id), "cancel")
        running.cancel = flag == b"1"
        if running.cancel:
            tracing.event("taskgate.cancel_requested")
    return running.cancel


def raise_if_cancelled() -> None:
    """Raise :class:`TaskCancelled` if the running task was asked to stop."""
    if cancel_requested():
        raise TaskCancelled("cancelled on request")

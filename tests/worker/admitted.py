"""Reading what the admission tests' tasks log (``tests/sample_tasks._admitted_run``): a line
``start|end <token> <pid> <time>`` per start and end, appended in the order they happened."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from taskgate.records import keys

from ..helpers import lines


@dataclass(frozen=True)
class Event:
    kind: str  # "start" or "end"
    token: str
    pid: int
    at: float  # the task's time.time()


def events(log: Path) -> list[Event]:
    """The log's events, in the order they were written."""
    found = []
    for line in lines(log):
        kind, token, pid, at = line.split()
        found.append(Event(kind, token, int(pid), float(at)))
    return found


def starts(log: Path) -> Counter[str]:
    """How many times each token started."""
    return Counter(event.token for event in events(log) if event.kind == "start")


def most_at_once(seen: Iterable[Event], counts: Callable[[str], bool] = lambda _: True) -> int:
    """The most runs (of the tokens ``counts`` selects) between a start and its end at once,
    in the order the events were written (an end is written before its run lets its slot go,
    a start after its run was admitted: the order is the truth, whatever the clocks say)."""
    running: Counter[str] = Counter()
    most = 0
    for event in seen:
        if not counts(event.token):
            continue
        if event.kind == "start":
            running[event.token] += 1
        elif running[event.token]:
            running[event.token] -= 1
        most = max(most, sum(running.values()))
    return most


def field(redis: Redis, task_id: str, name: str) -> str | None:
    """A field of the task's record, as stored."""
    value = redis.hget(keys.record(task_id), name)
    return value.decode() if isinstance(value, bytes) else None


def in_celery_queue(redis: Redis, task_id: str, queue: str = "celery") -> bool:
    """Whether a message of the task is in the broker's list ``queue``."""
    return any(task_id.encode() in message for message in redis.lrange(queue, 0, -1))


def waits_for_slot(redis: Redis, task_id: str) -> bool:
    """The run waits in taskgate's Redis for a concurrency slot, its message in no queue."""
    return (field(redis, task_id, "waiting_for") == "slot" and field(redis, task_id, "state") in ("queued", "retrying")
            and not in_celery_queue(redis, task_id))

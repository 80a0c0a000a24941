"""Prometheus metrics: this process's own, plus cluster-wide ones read from Redis.

Names follow Prometheus' naming guide (base units, ``_seconds``, ``_total`` on counters) and
the shape of celery-exporter's (``celery_task_sent_total``, ``celery_task_runtime``,
``celery_queue_length``, ``celery_worker_up``); README's "Metrics" lists them.

Process metrics (this API, or your app): tasks submitted by task, Redis call latency, event-loop
lag, and prometheus-client's process collector (RSS, CPU, open fds). Cluster metrics (every
replica reports the same values, read at scrape time): tasks ended by task and state, queue-wait
and run-time histograms (counted by the workers' transition scripts in ``taskgate:stats``),
webhook deliveries by outcome (counted there by the workers' senders), queue depths, delayed
tasks, dead letters, and the live workers with their concurrency and running tasks.

An API in several processes (``taskgate api --workers N``, or your app under uvicorn or
gunicorn workers with PROMETHEUS_MULTIPROC_DIR set) runs the client in its multiprocess mode:
each process writes its values to files in that directory and whichever process answers a
scrape sums them all (counters and histograms summed, dead processes' counts kept; the lag the
worst of the live processes'). That is what one scrape through a shared port can answer;
per-process labels would need every process scraped on its own. The client offers no process
collector in that mode, so RSS and CPU are left out then.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ..brokers.message import PRIORITY_STEPS, queue_for_priority
from ..constants import LATENCY_BUCKETS
from ..records import keys
from ..records.workers import async_heartbeats

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..records.workers import Heartbeat
    from ..registry import TaskSpec
    from .backend import Backend

SUBMITS = Counter("taskgate_tasks_submitted", "Tasks this process submitted to the queue, by task "
                  "(an API in several processes: all of them, summed). Each batch item counts; "
                  "refused submits do not.", ["task"])
REDIS_SECONDS = Histogram("taskgate_redis_call_seconds", "Seconds this process's Redis and broker "
                          "operations took.", buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                       0.1, 0.25, 0.5, 1.0))
LOOP_LAG = Gauge("taskgate_event_loop_lag_seconds", "Seconds this process's event loop woke up late "
                 "at its last check, every 0.5 s (several processes: the worst of the live ones).",
                 multiprocess_mode="livemax")

#: The cluster histograms: the stats field prefix -> (name, help).
HISTOGRAMS = {
    "wait": ("taskgate_queue_wait_seconds", "Seconds from a task's submission to the start of its last "
             "attempt (countdown, eta and retry backoff included), by task; observed when it ends, for "
             "tasks that started."),
    "run": ("taskgate_task_runtime_seconds", "Seconds from the start of a task's last attempt to its "
            "end, by task; observed when it ends, for tasks that started."),
}


def own_registry() -> CollectorRegistry:
    """This API's metrics: the process's registry, or in multiprocess mode (the client chose it
    at import from PROMETHEUS_MULTIPROC_DIR) every process's files, summed."""
    if values.ValueClass is values.MutexValue:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


async def watch_loop_lag(interval: float = 0.5) -> None:
    """Measure event-loop lag forever (a lifespan task)."""
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval)
        LOOP_LAG.set(max(0.0, loop.time() - started - interval))


@dataclasses.dataclass
class Buckets:
    """One task's histogram as the stats keep it: counts per bucket (not cumulative; the last
    one past :data:`.LATENCY_BUCKETS`) and the sum of the values."""

    counts: list[float] = dataclasses.field(default_factory=lambda: [0.0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus' buckets: ``(le, observations <= le)``, ending with ``+Inf``."""
        running, buckets = 0.0, []
        for bound, count in zip([*map(str, LATENCY_BUCKETS), "+Inf"], self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


@dataclasses.dataclass
class Snapshot:
    """The cluster's numbers, read from Redis in one round of calls."""

    ended: dict[tuple[str, str], float]  #: (task, state) -> tasks that ended so
    histograms: dict[str, dict[str, Buckets]]  #: "wait" | "run" -> task -> histogram
    webhooks: dict[str, float]  #: outcome -> delivery attempts
    depths: dict[str, int]  #: queue -> messages waiting (empty when the broker is not Redis)
    delayed: int
    dead: int
    workers: dict[str, Heartbeat]  #: the live workers' last heartbeats


def parse_stats(stats: dict[str, float]) -> tuple[dict[tuple[str, str], float], dict[str, dict[str, Buckets]],
                                                  dict[str, float]]:
    """The ended counts, histograms and webhook outcomes in the stats hash (see :data:`.keys.STATS`)."""
    ended: dict[tuple[str, str], float] = {}
    histograms: dict[str, dict[str, Buckets]] = {kind: defaultdict(Buckets) for kind in HISTOGRAMS}
    webhooks: dict[str, float] = {}
    for field, value in stats.items():
        kind, _, rest = field.partition(":")
        if kind == "done":
            task, _, state = rest.rpartition(":")
            ended[(task, state)] = value
        elif kind in HISTOGRAMS:
            task, _, index = rest.rpartition(":")
            histograms[kind][task].counts[int(index)] = value
        elif kind.removesuffix("_sum") in HISTOGRAMS and kind.endswith("_sum"):
            histograms[kind.removesuffix("_sum")][rest].total = value
        elif kind == "webhook":
            webhooks[rest] = value
    return ended, {kind: dict(by_task) for kind, by_task in histograms.items()}, webhooks


async def snapshot(backend: Backend, catalogue: dict[str, TaskSpec]) -> Snapshot:
    """The cluster's numbers now: the stats hash, queue depths, delayed and dead tasks, workers."""
    default = backend.settings.default_queue
    queues = sorted({spec.queue or default for spec in catalogue.values()} | {default})
    state = backend.redis
    async with backend.deadline():
        pipe = state.pipeline(transaction=False)
        pipe.hgetall(keys.STATS)
        pipe.zcard(keys.DELAYED)
        pipe.zcard(keys.DEAD)
        for queue in queues:
            for step in PRIORITY_STEPS:
                pipe.llen(queue_for_priority(queue, step))
        raw_stats, delayed, dead, *lengths = await pipe.execute()
        workers = await async_heartbeats(state)
    stats = {k.decode(): float(v) for k, v in cast(dict[bytes, bytes], raw_stats).items()}
    depths = {queue: sum(lengths[i * len(PRIORITY_STEPS):(i + 1) * len(PRIORITY_STEPS)])
              for i, queue in enumerate(queues)} if backend.settings.broker_is_redis else {}
    ended, histograms, webhooks = parse_stats(stats)
    return Snapshot(ended, histograms, webhooks, depths, int(delayed), int(dead), workers)


class _Cluster(Collector):
    """Metric families built from one :class:`Snapshot`."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        snap = self.snap
        ended = CounterMetricFamily("taskgate_tasks", "Tasks that ended, by task and state: succeeded, "
                                    "failed (errors, and retries spent), cancelled, expired (not started "
                                    "before its expiry). Counted by the workers once per task.",
                                    labels=["task", "state"])
        for (task, state), count in sorted(snap.ended.items()):
            ended.add_metric([task, state], count)
        yield ended
        for kind, (name, help_text) in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, help_text, labels=["task"])
            for task, histogram in sorted(snap.histograms[kind].items()):
                family.add_metric([task], histogram.cumulative(), sum_value=histogram.total)
            yield family
        webhooks = CounterMetricFamily(
            "taskgate_webhook_deliveries", "Webhook delivery attempts recorded by the workers, by outcome: "
            "delivered; retrying (failed, tried again later); failed (the schedule spent); gone (a 410: "
            "its subscription disabled); disabled (its subscription failed for days and was disabled); "
            "dropped (not sent: its subscription was deleted or disabled).", labels=["outcome"])
        for outcome, count in sorted(snap.webhooks.items()):
            webhooks.add_metric([outcome], count)
        yield webhooks
        depth = GaugeMetricFamily("taskgate_queue_depth", "Messages waiting in each queue, all priorities "
                                  "(none when the broker is RabbitMQ: its own metrics tell).",
                                  labels=["queue"])
        for queue, count in sorted(snap.depths.items()):
            depth.add_metric([queue], count)
        yield depth
        yield GaugeMetricFamily("taskgate_delayed_tasks", "Tasks waiting for their countdown, eta or "
                                "retry backoff.", value=snap.delayed)
        yield GaugeMetricFamily("taskgate_dead_letters", "Tasks in the dead-letter list.", value=snap.dead)
        yield GaugeMetricFamily("taskgate_workers", "Workers whose heartbeat (every 2 s) is current.",
                                value=len(snap.workers))
        concurrency = GaugeMetricFamily("taskgate_worker_concurrency", "Tasks each live worker runs at "
                                        "once (0: not known), by worker (node name:pid).", labels=["worker"])
        active = GaugeMetricFamily("taskgate_worker_tasks_active", "Tasks each live worker was running at "
                                   "its last heartbeat, by worker (node name:pid).", labels=["worker"])
        for worker, beat in sorted(snap.workers.items()):
            concurrency.add_metric([worker], beat.concurrency)
            active.add_metric([worker], beat.active)
        yield concurrency
        yield active


async def scrape(backend: Backend, catalogue: dict[str, TaskSpec]) -> bytes:
    """The whole exposition: this process's metrics, then the cluster's."""
    cluster = CollectorRegistry()
    cluster.register(_Cluster(await snapshot(backend, catalogue)))
    return generate_latest(own_registry()) + generate_latest(cluster)

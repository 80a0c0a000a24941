"""Prometheus metrics: this API's own, plus cluster-wide ones read from Redis.

API metrics (this replica): submissions by task, Redis call latency, event-loop lag, and
prometheus-client's process collector (RSS, CPU, open fds). Cluster metrics (every replica
reports the same values, read at scrape time): completions by task and state, queue-wait and
run-time histograms (counted by the workers' transition scripts in ``taskgate:stats``), webhook
deliveries by outcome (counted there by the workers' senders), queue depths, delayed tasks, dead
letters and live workers.

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

    from ..registry import TaskSpec
    from .backend import Backend

SUBMITS = Counter("taskgate_submits", "Tasks accepted by this API (all its processes).", ["task"])
REDIS_SECONDS = Histogram("taskgate_redis_call_seconds", "Duration of this API's Redis and broker "
                          "operations.", buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                  0.25, 0.5, 1.0))
LOOP_LAG = Gauge("taskgate_event_loop_lag_seconds", "How late this API's event loop woke up last (the "
                 "latest of its live processes' loops).", multiprocess_mode="livemax")


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


class _Cluster(Collector):
    """Metric families built from one snapshot of Redis."""

    def __init__(self, stats: dict[str, float], depths: dict[str, int], delayed: int, dead: int,
                 workers: int) -> None:
        self.stats, self.depths, self.delayed, self.dead, self.workers = stats, depths, delayed, dead, workers

    def collect(self) -> Iterator[Metric]:
        done = CounterMetricFamily("taskgate_tasks_finished", "Tasks that ended, by task and state.",
                                   labels=["task", "state"])
        webhooks = CounterMetricFamily(
            "taskgate_webhook_deliveries", "Webhook delivery attempts recorded by the workers, by outcome: "
            "delivered; retrying (failed, tried again later); failed (the schedule spent); gone (a 410: "
            "its subscription disabled); disabled (its subscription failed for days and was disabled); "
            "dropped (not sent: its subscription was deleted or disabled).", labels=["outcome"])
        buckets: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * (len(LATENCY_BUCKETS) + 1))
        sums: dict[tuple[str, str], float] = {}
        for field, value in self.stats.items():
            kind, _, rest = field.partition(":")
            if kind == "done":
                task, _, state = rest.rpartition(":")
                done.add_metric([task, state], value)
            elif kind in ("wait", "run"):
                task, _, index = rest.rpartition(":")
                buckets[(kind, task)][int(index)] = value
            elif kind in ("wait_sum", "run_sum"):
                sums[(kind.removesuffix("_sum"), rest)] = value
            elif kind == "webhook":
                webhooks.add_metric([rest], value)
        yield done
        yield webhooks
        for kind, help_text in (("wait", "Seconds from submission to start."),
                                ("run", "Seconds from start to end.")):
            family = HistogramMetricFamily(f"taskgate_task_{kind}_seconds", help_text, labels=["task"])
            for (metric, task), counts in sorted(buckets.items()):
                if metric != kind:
                    continue
                cumulative, total = [], 0.0
                for bound, count in zip([*LATENCY_BUCKETS, float("inf")], counts, strict=True):
                    total += count
                    cumulative.append((str(bound) if bound != float("inf") else "+Inf", total))
                family.add_metric([task], cumulative, sum_value=sums.get((kind, task), 0.0))
            yield family
        depth = GaugeMetricFamily("taskgate_queue_depth", "Messages waiting in each queue.", labels=["queue"])
        for queue, count in sorted(self.depths.items()):
            depth.add_metric([queue], count)
        yield depth
        yield GaugeMetricFamily("taskgate_delayed_tasks", "Tasks waiting for their countdown/eta or "
                                "retry backoff.", value=self.delayed)
        yield GaugeMetricFamily("taskgate_dead_letters", "Tasks in the dead-letter list.", value=self.dead)
        yield GaugeMetricFamily("taskgate_workers", "Workers whose heartbeat is current.", value=self.workers)


async def scrape(backend: Backend, catalogue: dict[str, TaskSpec]) -> bytes:
    """The whole exposition: this process's metrics, then the cluster's."""
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
        workers = len(await async_heartbeats(state))
    stats = {k.decode(): float(v) for k, v in cast(dict[bytes, bytes], raw_stats).items()}
    depths = {queue: sum(lengths[i * len(PRIORITY_STEPS):(i + 1) * len(PRIORITY_STEPS)])
              for i, queue in enumerate(queues)} if backend.settings.broker_is_redis else {}
    cluster = CollectorRegistry()
    cluster.register(_Cluster(stats, depths, int(delayed), int(dead), workers))
    return generate_latest(own_registry()) + generate_latest(cluster)

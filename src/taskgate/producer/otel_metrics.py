"""The cluster's metrics as OpenTelemetry instruments, beside ``GET /metrics``.

When the process has a real meter provider (the one a user's app set up, e.g. with
``opentelemetry-instrument``, or the one ``taskgate api`` sets up with ``TASKGATE_OTEL=on``
from ``OTEL_METRICS_EXPORTER``), an open :class:`~taskgate.Taskgate` registers observable
instruments on it whose values are the same :class:`.metrics.Snapshot` the Prometheus scrape
renders, read from Redis when the SDK's reader collects (at most once a second, however many
instruments it reads). Names are Prometheus' with dots, the units in ``unit``: an exporter that
converts to Prometheus names (OpenTelemetry's own does) gives back ``taskgate_tasks_total``,
``taskgate_queue_depth`` and the rest. Without OpenTelemetry (``pip install 'taskgate[otel]'``)
or a meter provider, :func:`observe` registers nothing.

Not here: the queue-wait and run-time histograms. OpenTelemetry has no asynchronous histogram to
report the buckets the workers count in Redis; recording them would be the worker's, at a run's
end, as a synchronous histogram.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .. import __version__
from .metrics import Snapshot, snapshot

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Observation
except ImportError:  # the extra is not installed: observe() registers nothing
    INSTALLED = False
else:
    INSTALLED = True

if TYPE_CHECKING:
    from .client import Producer

log = logging.getLogger(__name__)
#: Meter providers that record nothing: the API's default (a proxy until one is set) and its no-op.
_DEFERRED = {"_ProxyMeterProvider", "NoOpMeterProvider"}
#: A snapshot younger than this serves every instrument of one collection.
FRESH = 1.0


def configured() -> bool:
    """Whether this process has a meter provider that records (OpenTelemetry installed)."""
    return INSTALLED and type(metrics.get_meter_provider()).__name__ not in _DEFERRED


class Reader:
    """The latest snapshot, read on ``loop`` (where the producer's clients live) from the
    SDK's reader thread. On the loop itself, or with Redis failing, the last one read (or none)."""

    def __init__(self, producer: Producer, loop: asyncio.AbstractEventLoop) -> None:
        self.producer, self.loop = producer, loop
        self.lock = threading.Lock()
        self.last: Snapshot | None = None
        self.at = 0.0

    def __call__(self) -> Snapshot | None:
        with self.lock:
            if self.last is not None and time.monotonic() - self.at < FRESH:
                return self.last
            if self.loop.is_closed() or _on(self.loop):
                return self.last
            wait = self.producer.backend.settings.backend_timeout * 2 + 1
            reading = snapshot(self.producer.backend, self.producer.catalogue)
            try:
                future = asyncio.run_coroutine_threadsafe(reading, self.loop)
            except RuntimeError:  # the loop closed meanwhile
                reading.close()
                return self.last
            try:
                self.last, self.at = future.result(wait), time.monotonic()
            except Exception as exc:  # Unavailable, a timeout: this collection reports nothing new
                future.cancel()
                log.debug("taskgate: OpenTelemetry metrics not read: %s", exc)
            return self.last


def _on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


Values = Iterable[tuple[float, dict[str, Any]]]


def _counts(read: Callable[[], Snapshot | None], pick: Callable[[Snapshot], Values]
            ) -> Callable[[CallbackOptions], Iterator[Observation]]:
    """An instrument's callback: ``pick``'s (value, attributes) of the snapshot ``read`` gives."""
    def callback(_options: CallbackOptions) -> Iterator[Observation]:
        snap = read()
        if snap is not None:
            for value, attributes in pick(snap):
                yield Observation(value, attributes)
    return callback


def register(read: Callable[[], Snapshot | None], meter_provider: Any = None) -> None:
    """Register the instruments on ``meter_provider`` (the global one by default), each reading
    its values from ``read()``."""
    provider = meter_provider or metrics.get_meter_provider()
    meter = provider.get_meter("taskgate", __version__)
    meter.create_observable_counter(
        "taskgate.tasks", [_counts(read, lambda s: [(n, {"task": task, "state": state})
                                                    for (task, state), n in s.ended.items()])],
        unit="{task}", description="Tasks that ended, by task and state (succeeded, failed, cancelled, "
        "expired); counted by the workers once per task.")
    meter.create_observable_counter(
        "taskgate.webhook.deliveries", [_counts(read, lambda s: [(n, {"outcome": outcome})
                                                               for outcome, n in s.webhooks.items()])],
        unit="{delivery}", description="Webhook delivery attempts recorded by the workers, by outcome.")
    meter.create_observable_gauge(
        "taskgate.queue.depth", [_counts(read, lambda s: [(n, {"queue": queue})
                                                          for queue, n in s.depths.items()])],
        unit="{message}", description="Messages waiting in each queue, all priorities (none with RabbitMQ).")
    meter.create_observable_gauge("taskgate.delayed_tasks", [_counts(read, lambda s: [(s.delayed, {})])],
                                  unit="{task}", description="Tasks waiting for their countdown, eta or "
                                  "retry backoff.")
    meter.create_observable_gauge("taskgate.dead_letters", [_counts(read, lambda s: [(s.dead, {})])],
                                  unit="{task}", description="Tasks in the dead-letter list.")
    meter.create_observable_gauge("taskgate.workers", [_counts(read, lambda s: [(len(s.workers), {})])],
                                  unit="{worker}", description="Workers whose heartbeat is current.")
    meter.create_observable_gauge(
        "taskgate.worker.concurrency", [_counts(read, lambda s: [(b.concurrency, {"worker": w})
                                                               for w, b in s.workers.items()])],
        unit="{task}", description="Tasks each live worker runs at once, by worker (node name:pid).")
    meter.create_observable_gauge(
        "taskgate.worker.tasks_active", [_counts(read, lambda s: [(b.active, {"worker": w})
                                                                for w, b in s.workers.items()])],
        unit="{task}", description="Tasks each live worker was running at its last heartbeat.")


#: The Reader of the Taskgate opened last and still open, which every instrument reads.
_current: Reader | None = None
#: The meter providers the instruments are registered on (a provider keeps them for its life).
_registered: list[object] = []


def _read_current() -> Snapshot | None:
    reader = _current
    return reader() if reader is not None else None


def observe(producer: Producer, loop: asyncio.AbstractEventLoop) -> Reader | None:
    """For an open Taskgate, when a meter provider records: the cluster's instruments read its
    snapshots (registered on the provider once; a Taskgate opened later takes over), the Reader
    to give :func:`forget` at close. None, registering nothing, otherwise."""
    global _current
    if not configured():
        return None
    provider = metrics.get_meter_provider()
    if not any(known is provider for known in _registered):
        register(_read_current, provider)
        _registered.append(provider)
    _current = Reader(producer, loop)
    return _current


def forget(reader: Reader) -> None:
    """A closed Taskgate's Reader: the instruments stop reading it (they report nothing until
    another opens)."""
    global _current
    if _current is reader:
        _current = None

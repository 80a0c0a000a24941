"""The cluster's metrics as OpenTelemetry instruments: in a process with a meter provider, an
app's Taskgate reports the numbers ``GET /metrics`` does. Run in a process of its own: a meter
provider, once set, stays for the process's life."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ..helpers import env_for

SCRIPT = """
import asyncio, json
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client.parser import text_string_to_metric_families

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

import taskgate
from taskgate.producer.metrics import scrape
from taskgate.tasks.arithmetic import add


def points():
    found, data = {}, reader.get_metrics_data()  # on another thread than the loop
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    found[metric.name + json.dumps(dict(point.attributes), sort_keys=True)] = point.value
    return found


async def main():
    gate = taskgate.Taskgate()
    async with gate.lifespan():
        job = await add.submit(x=1, y=2)
        assert await job.result(timeout=30) == 3
        otel = await asyncio.to_thread(points)
        text = (await scrape(gate.producer.backend, gate.producer.catalogue)).decode()
    prometheus = {s.name + json.dumps(s.labels, sort_keys=True): s.value
                  for family in text_string_to_metric_families(text) for s in family.samples}
    after = await asyncio.to_thread(points)  # closed: the instruments report nothing more
    print(json.dumps({"otel": otel, "prometheus": prometheus, "after": after}))

asyncio.run(main())
"""

#: OpenTelemetry name -> the Prometheus sample name it matches.
SAME = {"taskgate.tasks": "taskgate_tasks_total", "taskgate.queue.depth": "taskgate_queue_depth",
        "taskgate.delayed_tasks": "taskgate_delayed_tasks", "taskgate.dead_letters": "taskgate_dead_letters",
        "taskgate.workers": "taskgate_workers", "taskgate.worker.concurrency": "taskgate_worker_concurrency",
        "taskgate.worker.tasks_active": "taskgate_worker_tasks_active",
        "taskgate.webhook.deliveries": "taskgate_webhook_deliveries_total"}


def test_an_apps_meter_provider_gets_the_numbers_of_get_metrics(redis_url: str, worker: object,
                                                                 tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env_for(redis_url), cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    otel, prometheus = found["otel"], found["prometheus"]
    assert otel['taskgate.tasks{"state": "succeeded", "task": "add"}'] >= 1
    assert otel["taskgate.workers{}"] >= 1
    # Counters only grow and the session's other tests may end tasks between the two reads;
    # read after, Prometheus' are at least OpenTelemetry's, and every series is in both.
    for key, value in otel.items():
        name, _, labels = key.partition("{")
        twin = SAME[name] + "{" + labels
        assert twin in prometheus, (key, sorted(prometheus))
        if name in ("taskgate.tasks", "taskgate.webhook.deliveries"):
            assert prometheus[twin] >= value, key
    assert not found["after"], "a closed Taskgate's instruments report nothing"

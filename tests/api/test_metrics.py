"""GET /metrics: Prometheus text with this replica's and the cluster's numbers."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..helpers import submit, wait


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_submits_completions_and_latency(client: httpx.Client) -> None:
    before = samples(client.get("/metrics").text)
    ok = submit(client, "add", {"x": 1, "y": 1})
    bad = submit(client, "boom", {"message": "no"})
    assert wait(client, ok)["state"] == "succeeded" and wait(client, bad)["state"] == "failed"
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("taskgate_submits_total", task="add") == 1
    assert delta("taskgate_tasks_finished_total", task="add", state="succeeded") == 1
    assert delta("taskgate_tasks_finished_total", task="boom", state="failed") == 1
    assert delta("taskgate_task_run_seconds_count", task="add") == 1
    assert delta("taskgate_task_wait_seconds_count", task="add") == 1
    assert after[("taskgate_workers", ())] >= 1
    assert ("taskgate_queue_depth", (("queue", "celery"),)) in after
    assert ("taskgate_event_loop_lag_seconds", ()) in after
    assert after[("taskgate_redis_call_seconds_count", ())] > 0
    assert ("process_resident_memory_bytes", ()) in after

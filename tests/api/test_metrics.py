"""GET /metrics: Prometheus text with this replica's and the cluster's numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..helpers import submit, wait, wait_for


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

    assert delta("taskgate_tasks_submitted_total", task="add") == 1
    assert delta("taskgate_tasks_total", task="add", state="succeeded") == 1
    assert delta("taskgate_tasks_total", task="boom", state="failed") == 1
    assert delta("taskgate_task_runtime_seconds_count", task="add") == 1
    assert delta("taskgate_queue_wait_seconds_count", task="add") == 1
    assert after[("taskgate_workers", ())] >= 1
    concurrency = {labels: value for (name, labels), value in after.items() if name == "taskgate_worker_concurrency"}
    assert len(concurrency) == after[("taskgate_workers", ())] and all(v >= 1 for v in concurrency.values())
    assert all(("taskgate_worker_tasks_active", labels) in after for labels in concurrency)
    assert ("taskgate_queue_depth", (("queue", "celery"),)) in after
    assert ("taskgate_event_loop_lag_seconds", ()) in after
    assert after[("taskgate_redis_call_seconds_count", ())] > 0
    assert ("process_resident_memory_bytes", ()) in after


def test_summary_counts_what_waits_runs_and_ended_and_workers_say_their_concurrency(
        client: httpx.Client, tmp_path: Path) -> None:
    before = client.get("/summary").json()
    started = tmp_path / "started"
    running = submit(client, "sleepy", {"seconds": 30, "started_file": str(started)})
    later = submit(client, "add", {"x": 1, "y": 2}, countdown=600)
    ok = [submit(client, "add", {"x": 1, "y": n}) for n in range(3)]
    bad = [submit(client, "boom", {"message": "no"}) for _ in range(2)]
    assert all(wait(client, task_id)["state"] == "succeeded" for task_id in ok)
    assert all(wait(client, task_id)["state"] == "failed" for task_id in bad)
    wait_for(started.exists, 20, "sleepy started")
    # the heartbeat (every 2 s) says it runs
    wait_for(lambda: client.get("/summary").json()["running"] >= 1, 10, "the running task counted")
    after = client.get("/summary").json()
    assert after["last_hour"]["succeeded"] - before["last_hour"]["succeeded"] >= 3
    assert after["last_hour"]["failed"] - before["last_hour"]["failed"] >= 2
    assert after["delayed"] >= 1 and after["workers"] >= 1 and after["concurrency"] >= 1
    assert after["queued"] is not None and after["dead_letters"] >= 0
    minutes = after["minutes"]
    assert len(minutes) == 15 and [m["at"] for m in minutes] == sorted(m["at"] for m in minutes)
    assert sum(m["succeeded"] for m in minutes[-2:]) >= 3, "counted in the current minute (or the one before)"
    assert any(m["wait_avg"] is not None and m["wait_avg"] >= 0 for m in minutes[-2:])
    workers = client.get("/workers").json()
    assert any(w["concurrency"] >= 1 and w["active"] >= 1 and "celery" in w["queues"] for w in workers)
    newest = max(datetime.fromisoformat(w["last_heartbeat"]) for w in workers)
    assert (datetime.now(UTC) - newest).total_seconds() < 15
    for task_id in (running, later):
        assert client.post(f"/tasks/{task_id}/cancel").status_code in (200, 202)

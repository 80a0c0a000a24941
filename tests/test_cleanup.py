"""Cleanup of old results: every key taskgate writes expires, so Redis returns to where it started,
and its memory does not grow with the number of tasks run."""

from __future__ import annotations

from pathlib import Path

import httpx
import redis

from taskgate.records import keys

from .helpers import start_api, start_valkey, start_worker, stop, wait_for

TASKS = 1000  # per round


def run_round(client: httpx.Client, conn: redis.Redis, baseline: int) -> None:
    """Submit TASKS tasks (a tenth fail), let them run, and check what they left has TTLs."""
    ids = []
    for i in range(TASKS):
        if i % 10 == 0:  # a tenth fail (the sum overflows 64 bits)
            ids.append(client.get("/add", params={"x": 2**63 - 1, "y": 1}).json()["task_id"])
        else:
            ids.append(client.post("/tasks/add", json={"x": i, "y": i}).json()["task_id"])
    assert client.post(f"/tasks/{ids[-1]}/cancel").status_code in (200, 409)
    wait_for(lambda: conn.llen("celery") == 0 and conn.hlen("unacked") == 0, 60, "the queue to drain")
    wait_for(lambda: client.get(f"/tasks/{ids[-1]}").json()["state"] in ("succeeded", "cancelled"), 20,
             "the last task to end")
    # While records exist, each key taskgate wrote carries a TTL, but for kombu's bindings,
    # the API's task catalogue and the limits tasks declare (one field per declared task,
    # rewritten at each start).
    kept = {keys.CATALOGUE.encode(), keys.LAYOUT.encode(), keys.LIMITS_DECLARED.encode()}
    for key in conn.scan_iter(count=1000):
        if not key.startswith(b"_kombu.binding") and key not in kept:
            assert conn.ttl(key) != -1, key  # -1: no TTL; -2: already gone
    assert conn.dbsize() > baseline
    assert not list(conn.scan_iter("celery-task-meta-*")), "results live in taskgate's records"


def test_keys_expire_back_to_baseline(tmp_path: Path) -> None:
    server = start_valkey(tmp_path / "valkey")
    url = f"{server.connection_url}/0"
    ttl = {"TASKGATE_RESULT_TTL": "2", "TASKGATE_FAILURE_TTL": "3"}
    worker = start_worker(url, tmp_path / "worker.log", **ttl)
    api, base = start_api(url, tmp_path / "api.log", **ttl)
    conn = redis.Redis.from_url(url)
    try:
        with httpx.Client(base_url=base, timeout=10) as client:
            client.get("/add", params={"x": 0, "y": 0})  # let the worker declare its bindings
            wait_for(lambda: conn.llen("celery") == 0, 20, "the warm-up task to be taken")
            wait_for(lambda: not list(conn.scan_iter("taskgate:task:*")), 20, "the warm-up record to expire")
            baseline = conn.dbsize()
            before = sorted(conn.scan_iter(count=1000))
            memory = [conn.info("memory")["used_memory"]]
            for _round in range(2):  # the second round must not leave Redis using more than the first
                run_round(client, conn, baseline)
                try:
                    wait_for(lambda: conn.dbsize() <= baseline, 30, f"the key count to return to {baseline}",
                             interval=0.5)
                except AssertionError as exc:
                    now = sorted(conn.scan_iter(count=1000))[:20]
                    raise AssertionError(f"{exc}: before {before}, now {now}") from None
                memory.append(conn.info("memory")["used_memory"])
        # Nothing grows with the number of tasks: after 1,000 more, memory is where the first
        # 1,000 left it (the first round's rise is connection buffers and the allocator's).
        print(f"Redis used_memory: {memory[0]} at start, {memory[1]} after {TASKS} tasks expired, "
              f"{memory[2]} after {2 * TASKS}")
        assert memory[2] - memory[1] < 64 * 1024, memory
    finally:
        conn.close()
        stop(api)
        stop(worker)
        server.stop()

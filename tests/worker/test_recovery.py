"""Loses nothing: worker death, poison tasks, Redis restarts, long delays, graceful shutdown.

Each test owns its Valkey (with an AOF), workers and API, and asserts through the API that
every accepted task ends truthfully, and that none ran twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from redis import Redis

from taskgate.records.workers import heartbeats
from taskgate.service.supervisor import port_is_free

from ..helpers import Stack, children, happens, kill, lines, submit, wait, wait_for


def test_killed_pool_child_reruns_the_task(stack: Stack) -> None:
    stack.start_worker()
    client = stack.start_api()
    started = stack.tmp / "pid"
    task_id = submit(client, "sleepy", {"seconds": 1.0, "started_file": str(started)})
    wait_for(started.exists, 20, "the task to start")
    first_pid = int(started.read_text())
    os.kill(first_pid, signal.SIGKILL)
    task = wait(client, task_id, 30)
    assert task["state"] == "succeeded" and task["result"] == 1.0, task
    assert task["attempts"] == 2  # the killed run and the rerun
    assert int(started.read_text()) != first_pid


def test_killed_worker_loses_nothing(stack: Stack) -> None:
    """SIGKILL of the whole worker (main and pool) with 2 tasks running and 1 waiting: all 3
    succeed once a new worker is up, within 60 s."""
    worker = stack.start_worker()
    client = stack.start_api()
    log = stack.tmp / "runs"
    ids = [submit(client, "logged_sleep", {"log": str(log), "token": f"t{i}", "seconds": 3})
           for i in range(3)]
    wait_for(lambda: len(lines(log)) == 2, 20, "two tasks to be running")
    for pid in [worker.pid, *children(worker.pid)]:
        kill(pid, signal.SIGKILL)
    worker.wait()
    killed_at = time.monotonic()
    stack.start_worker()
    tasks = [wait(client, task_id, 60) for task_id in ids]
    assert [task["state"] for task in tasks] == ["succeeded"] * 3, tasks
    assert time.monotonic() - killed_at < 60
    tokens = [line.split()[0] for line in lines(log)]
    assert sorted(set(tokens)) == ["t0", "t1", "t2"]
    assert len(tokens) == 5, tokens  # the two interrupted ran twice, the waiting one once


def test_messages_held_ahead_by_a_killed_worker_run_once(stack: Stack) -> None:
    """TASKGATE_WORKER_PREFETCH=3, concurrency 2: the worker holds 6 messages, 2 running and 4
    waiting in it. SIGKILL of the whole worker: all 6 succeed on a new worker, the 2 interrupted
    ran twice, the 4 held once."""
    worker = stack.start_worker(TASKGATE_WORKER_PREFETCH="3")
    client = stack.start_api()
    log = stack.tmp / "runs"
    ids = [submit(client, "logged_sleep", {"log": str(log), "token": f"t{i}", "seconds": 3})
           for i in range(6)]
    wait_for(lambda: len(lines(log)) == 2, 20, "two tasks to be running")
    redis = Redis.from_url(stack.url)
    wait_for(lambda: sum(len(beat.tags) for beat in heartbeats(redis).values()) == 6, 20,
             "the worker's heartbeat to name the 6 messages it holds")
    assert redis.llen("celery") == 0  # none left in the queue: all 6 in the worker's hands
    for pid in [worker.pid, *children(worker.pid)]:
        kill(pid, signal.SIGKILL)
    worker.wait()
    stack.start_worker()
    tasks = [wait(client, task_id, 60) for task_id in ids]
    assert [task["state"] for task in tasks] == ["succeeded"] * 6, tasks
    tokens = [line.split()[0] for line in lines(log)]
    assert sorted(set(tokens)) == [f"t{i}" for i in range(6)]
    assert len(tokens) == 8, tokens  # the two interrupted ran twice, the four held once


def test_poison_task_is_dead_lettered_after_max_deliveries(stack: Stack) -> None:
    stack.env = {"TASKGATE_MAX_DELIVERIES": "3"}
    stack.start_worker()
    client = stack.start_api()
    log, kill = stack.tmp / "starts", stack.tmp / "kill"
    kill.write_text("yes")
    task_id = submit(client, "poison", {"log": str(log), "kill_file": str(kill)})
    task = wait(client, task_id, 60)
    assert task["state"] == "failed", task
    assert task["error"]["type"] == "WorkerLostError"
    assert len(lines(log)) == 3, "exactly TASKGATE_MAX_DELIVERIES deliveries ran"
    dead = client.get("/dead-letters").json()["dead_letters"]
    assert [d["task_id"] for d in dead] == [task_id]
    assert dead[0]["reason"] == "max_deliveries" and dead[0]["deliveries"] == 3
    assert dead[0]["arguments"] == {"log": str(log), "kill_file": str(kill)}

    kill.unlink()
    requeued = client.post(f"/dead-letters/{task_id}/requeue")
    # the answer reads the record after the requeue: an idle worker may have taken it already
    assert requeued.status_code == 200 and requeued.json()["state"] in ("queued", "started", "succeeded")
    task = wait(client, task_id, 30)
    assert task["state"] == "succeeded" and task["result"] == "survived" and task["attempts"] == 1
    assert client.get("/dead-letters").json()["dead_letters"] == []
    assert client.post(f"/dead-letters/{task_id}/requeue").status_code == 404


def test_exhausted_retries_are_dead_lettered_and_droppable(stack: Stack) -> None:
    stack.start_worker()
    client = stack.start_api()
    task_id = submit(client, "flaky", {"counter": str(stack.tmp / "n"), "failures": 99})
    assert wait(client, task_id, 30)["state"] == "failed"
    dead = client.get("/dead-letters").json()["dead_letters"]
    assert dead[0]["task_id"] == task_id and dead[0]["reason"] == "max_retries"
    assert dead[0]["attempts"] == 4 and dead[0]["error"]["type"] == "Flaky"
    cli = subprocess.run([sys.executable, "-m", "taskgate", "dead-letters", "list", "--json"],
                         env={**os.environ, "TASKGATE_REDIS_URL": stack.url}, capture_output=True,
                         text=True, timeout=60)
    assert task_id in cli.stdout, cli.stderr
    assert client.delete(f"/dead-letters/{task_id}").status_code == 204
    assert client.get("/dead-letters").json()["dead_letters"] == []
    assert client.get(f"/tasks/{task_id}").json()["state"] == "failed"


def test_redis_killed_and_restarted_from_aof_loses_no_queued_task(stack: Stack) -> None:
    client = stack.start_api()
    ids = [client.get("/add", params={"x": i, "y": 1}).json()["task_id"] for i in range(1000)]
    # Every write acknowledged so far is on disk: WAITAOF returns once the AOF is fsynced up to
    # this connection's last write, which Redis logged after all of the API's.
    with Redis.from_url(stack.url) as probe:
        probe.set("aof-probe", 1)
        assert probe.execute_command("WAITAOF", 1, 0, 5000)[0] == 1
    assert stack.server is not None
    port = stack.server.port
    stack.server.terminate()  # SIGKILL: no shutdown save
    response = client.get("/add", params={"x": 1, "y": 1})
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    stack.start_valkey(port)
    wait_for(lambda: client.get("/readyz").status_code == 200, 20, "the API to reconnect")
    stack.start_worker()
    tasks = {task_id: wait(client, task_id, 60) for task_id in ids}
    assert all(task["state"] == "succeeded" for task in tasks.values())
    assert all(task["attempts"] == 1 for task in tasks.values()), "a task ran twice"
    assert [tasks[task_id]["result"] for task_id in ids] == [i + 1 for i in range(1000)]


def test_countdown_longer_than_visibility_runs_once(stack: Stack) -> None:
    stack.env = {"TASKGATE_VISIBILITY_TIMEOUT": "2"}
    stack.start_worker()
    client = stack.start_api()
    log = stack.tmp / "runs"
    task_id = submit(client, "logged_sleep", {"log": str(log), "token": "once", "seconds": 0},
                     countdown=5)
    assert client.get(f"/tasks/{task_id}").json()["next_attempt_at"] is not None
    task = wait(client, task_id, 30)
    assert task["state"] == "succeeded"
    created = time.mktime(time.strptime(task["created_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    started = time.mktime(time.strptime(task["started_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert started - created >= 4
    assert not happens(lambda: len(lines(log)) > 1, within=4), "ran again after several visibility windows"
    assert lines(log) == [f"once {lines(log)[0].split()[1]}"]


def test_sigterm_finishes_the_running_task(stack: Stack) -> None:
    worker = stack.start_worker()
    client = stack.start_api()
    log = stack.tmp / "runs"
    task_id = submit(client, "logged_sleep", {"log": str(log), "token": "t", "seconds": 2})
    wait_for(lambda: len(lines(log)) == 1, 20, "the task to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    task = client.get(f"/tasks/{task_id}").json()
    assert task["state"] == "succeeded" and task["result"] == "t"
    assert len(lines(log)) == 1


def test_running_worker_reconnects_after_redis_restart(stack: Stack) -> None:
    stack.start_worker()
    client = stack.start_api()
    assert wait(client, submit(client, "add", {"x": 1, "y": 1}))["state"] == "succeeded"
    assert stack.server is not None
    port = stack.server.port
    stack.server.terminate()
    wait_for(lambda: port_is_free("127.0.0.1", port), 10, "the old server's port to be free")
    stack.start_valkey(port)
    wait_for(lambda: client.get("/readyz").status_code == 200, 20, "the API to reconnect")
    task = wait(client, submit(client, "add", {"x": 2, "y": 2}), 60)
    assert task["state"] == "succeeded" and task["result"] == 4, "the worker did not reconnect"

"""Schedules fired by the workers' keepers, on private servers: each tick once with 2 and 3
workers (runs counted by the task itself), overlap skip, catch-up after the workers were down,
declared schedules following their declaration, a task no worker has, workers SIGKILLed while
ticks fire, and Redis restarted from its AOF."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis import Redis

from taskgate.config import Settings
from taskgate.producer.dispatch import schedule_trace_id
from taskgate.records import keys, scripts
from taskgate.records.schedules import decode
from taskgate.worker.celery_app import create_celery_app
from taskgate.worker.scheduler import Firer, ms

from .. import otel
from ..helpers import Stack, stop, wait_for


def runs_of(client: httpx.Client, schedule_id: str) -> list[dict[str, Any]]:
    """Every run of a schedule (GET /tasks?schedule_id=, all pages), oldest first."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get("/tasks", params={"schedule_id": schedule_id, "limit": 100,
                                            **({"cursor": cursor} if cursor else {})}).json()
        found += page["tasks"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found[::-1]


def executions(log: Path) -> Counter[str]:
    """How many times each task id started, as the task logged it."""
    if not log.exists():
        return Counter()
    return Counter(line.split()[1] for line in log.read_text().splitlines() if line.startswith("start"))


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def every_second(client: httpx.Client, log: Path, **extra: Any) -> dict[str, Any]:
    response = client.post("/schedules", json={"task": "stamped", "arguments": {"log": str(log)}, "every": 1,
                                               **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def settle(client: httpx.Client, schedule_id: str, log: Path) -> list[dict[str, Any]]:
    """Pause the schedule, wait for its runs to end, and return them."""
    assert client.post(f"/schedules/{schedule_id}/pause").status_code == 200

    def ended() -> bool:
        runs = runs_of(client, schedule_id)
        return all(run["state"] == "succeeded" for run in runs) and sum(executions(log).values()) >= len(runs)

    wait_for(ended, 30, "the runs to end")
    return runs_of(client, schedule_id)


def assert_once_per_tick(runs: list[dict[str, Any]], first_tick: float, log: Path) -> None:
    ticks = [seconds(run["tick"]) for run in runs]
    assert len(set(ticks)) == len(ticks), f"a tick fired twice: {Counter(ticks).most_common(3)}"
    assert ticks == [first_tick + k for k in range(len(ticks))], f"ticks missing or out of step: {ticks}"
    counted = executions(log)
    assert set(counted) == {run["task_id"] for run in runs}
    assert set(counted.values()) == {1}, f"a run executed twice: {counted.most_common(3)}"


@pytest.mark.parametrize("workers", [2, 3])
def test_each_tick_fires_once_with_several_workers(stack: Stack, workers: int) -> None:
    client = stack.start_api()
    for _ in range(workers):
        stack.start_worker()
    log = stack.tmp / "runs"
    schedule = every_second(client, log)
    wait_for(lambda: len(runs_of(client, schedule["schedule_id"])) >= 8, 30, "8 ticks")
    runs = settle(client, schedule["schedule_id"], log)
    assert_once_per_tick(runs, seconds(schedule["next_run_at"]), log)
    lateness = [seconds(run["created_at"]) - seconds(run["tick"]) for run in runs]
    assert min(lateness) >= 0 and max(lateness) < 1.0, lateness


def test_workers_killed_while_ticks_fire_lose_none_and_double_none(stack: Stack) -> None:
    client = stack.start_api()
    doomed = [stack.start_worker(), stack.start_worker()]
    stack.start_worker()
    log = stack.tmp / "runs"
    schedule = every_second(client, log)
    for count, worker in zip((3, 6), doomed, strict=True):
        wait_for(lambda n=count: len(runs_of(client, schedule["schedule_id"])) >= n, 30, f"{count} ticks")
        os.kill(worker.pid, signal.SIGKILL)  # its keeper may be inside a pass
    wait_for(lambda: len(runs_of(client, schedule["schedule_id"])) >= 10, 30, "10 ticks")
    runs = settle(client, schedule["schedule_id"], log)
    assert_once_per_tick(runs, seconds(schedule["next_run_at"]), log)


def test_overlap_skip_never_runs_two_at_once(stack: Stack) -> None:
    client = stack.start_api()
    stack.start_worker()
    log = stack.tmp / "runs"
    response = client.post("/schedules", json={"task": "stamped", "arguments": {"log": str(log), "seconds": 2.2},
                                               "every": 1, "overlap": "skip"})
    schedule_id = response.json()["schedule_id"]
    wait_for(lambda: len(runs_of(client, schedule_id)) >= 3, 30, "3 runs")
    settle(client, schedule_id, log)
    running = 0
    for line in log.read_text().splitlines():  # the worker has 2 processes: overlap was possible
        running += 1 if line.startswith("start") else -1
        assert running <= 1, log.read_text()
    assert client.get(f"/schedules/{schedule_id}").json()["skipped"] >= 2


def test_catchup_after_the_workers_were_down(stack: Stack) -> None:
    client = stack.start_api()
    log = stack.tmp / "runs"
    quiet = every_second(client, log, catchup="none")["schedule_id"]
    once = every_second(client, log, catchup="one")["schedule_id"]
    redis = Redis.from_url(stack.url)
    down_since = time.time() - 60  # as if made a minute ago, with no worker since
    for schedule_id in (quiet, once):
        redis.hset(keys.schedule(schedule_id), "anchor", round(down_since * 1000))
        redis.zadd(keys.SCHEDULES_DUE, {schedule_id: round((down_since + 1) * 1000)})
    back = time.time()
    stack.start_worker()
    wait_for(lambda: client.get(f"/schedules/{quiet}").json()["missed"] == 1, 30, "the quiet catch-up")
    wait_for(lambda: len(runs_of(client, quiet)) >= 2 and len(runs_of(client, once)) >= 3, 30, "ticks again")
    quiet_runs, once_runs = settle(client, quiet, log), settle(client, once, log)
    assert min(seconds(run["tick"]) for run in quiet_runs) >= back - 1, "catchup none fired a missed tick"
    # both were handled in the worker's first pass, on the same grid: `one` fired the latest
    # tick missed by then, `none` fired nothing and went on from the next
    assert seconds(quiet_runs[0]["tick"]) == seconds(once_runs[0]["tick"]) + 1
    assert client.get(f"/schedules/{once}").json()["missed"] == 0
    assert seconds(once_runs[0]["tick"]) >= back - 1, "not an old missed tick: the latest one"
    ticks = [seconds(run["tick"]) for run in once_runs]
    assert len(set(ticks)) == len(ticks) and ticks == sorted(ticks)


def test_a_task_no_worker_has_is_reported_and_fires_nothing(stack: Stack) -> None:
    client = stack.start_api()
    stack.start_worker()
    log = stack.tmp / "runs"
    schedule_id = every_second(client, log)["schedule_id"]
    wait_for(lambda: len(runs_of(client, schedule_id)) >= 1, 30, "a first run")
    redis = Redis.from_url(stack.url)
    redis.hset(keys.schedule(schedule_id), "celery_name", "taskgate.gone")  # as if its module were removed
    wait_for(lambda: "no live worker has task" in (client.get(f"/schedules/{schedule_id}").json()["problem"] or ""),
             30, "the problem to be reported")
    fired = len(runs_of(client, schedule_id))
    redis.hset(keys.schedule(schedule_id), "celery_name", "taskgate.stamped")
    wait_for(lambda: len(runs_of(client, schedule_id)) > fired, 30, "firing again once the task is back")
    assert client.get(f"/schedules/{schedule_id}").json()["problem"] is None
    settle(client, schedule_id, log)


DECLARED = '''
import taskgate

@taskgate.task{options}
def beat(log: str) -> str:
    with open(log, "a") as out:
        out.write("start beat\\n")
    return log
'''


def test_declared_schedules_follow_their_declaration(stack: Stack) -> None:
    client = stack.start_api()
    log = stack.tmp / "beats"
    module = stack.tmp / "declared_tasks.py"
    env = {"TASKGATE_TASK_MODULES": "declared_tasks"}

    def declare(options: str) -> Any:
        module.write_text(DECLARED.format(options=options))
        return stack.start_worker(**env)

    worker = declare(f"(schedule=taskgate.every(seconds=1, arguments={{'log': {str(log)!r}}}))")
    wait_for(lambda: log.exists() and log.read_text().count("start") >= 2, 30, "the declared schedule to fire")
    made = client.get("/schedules/declared-beat").json()
    assert (made["every"], made["declared"], made["arguments"]) == (1.0, "declared_tasks", {"log": str(log)})
    assert client.patch("/schedules/declared-beat", json={"every": 5}).status_code == 409
    assert client.delete("/schedules/declared-beat").status_code == 409
    stop(worker)

    worker = declare(f"(schedule=taskgate.cron('0 3 * * *', arguments={{'log': {str(log)!r}}}))")
    changed = client.get("/schedules/declared-beat").json()
    assert (changed["cron"], changed["every"]) == ("0 3 * * *", None)
    assert seconds(changed["next_run_at"]) % 86400 == 3 * 3600
    stop(worker)

    worker = declare("")
    assert client.get("/schedules/declared-beat").status_code == 404, "the declaration is gone"
    stop(worker)


def test_schedules_survive_a_redis_restart_from_its_aof(stack: Stack) -> None:
    client = stack.start_api()
    stack.start_worker()
    log = stack.tmp / "runs"
    schedule_id = every_second(client, log)["schedule_id"]
    wait_for(lambda: len(runs_of(client, schedule_id)) >= 2, 30, "2 runs")
    assert stack.server is not None
    port = stack.server.port
    stack.server.stop()  # a clean shutdown: Valkey writes its AOF out first
    stack.start_valkey(port)
    wait_for(lambda: client.get(f"/schedules/{schedule_id}").status_code == 200, 30, "the API to recover")
    fired = len(runs_of(client, schedule_id))
    wait_for(lambda: len(runs_of(client, schedule_id)) >= fired + 2, 60, "firing after the restart")
    settle(client, schedule_id, log)


def test_keepers_that_read_the_same_tick_fire_it_once(own_redis_url: str) -> None:
    """The race the end-to-end tests rarely meet (keepers' passes are 0.5 s apart): eight
    keepers read the same due tick, then all fire it at once. One run."""
    settings = Settings(redis_url=own_redis_url)
    app = create_celery_app(settings)
    redis = Redis.from_url(own_redis_url)
    now = time.time()
    scripts.Scripts(redis)(scripts.schedule_put(
        "raced", "anonymous", mode="create", limit=0, now=now - 2, next_due=ms(now - 1), enabled=True,
        fields={"task": "add", "celery_name": "taskgate.add", "every": "1.0", "anchor": ms(now - 2),
                "arguments": '{"x": 1, "y": 2}'}))
    firers = [Firer(app, Redis.from_url(own_redis_url), settings, ["taskgate.add"]) for _ in range(8)]
    read = [(firer, firer.due(now)) for firer in firers]
    assert all(due == [("raced", ms(now - 1))] for _, due in read), "each keeper saw the tick due"
    barrier = threading.Barrier(len(firers))
    fired: list[int] = []

    def fire(firer: Firer, due: list[tuple[str, int]]) -> None:
        schedule = firer.client.hgetall(keys.schedule("raced"))
        barrier.wait()
        fired.append(firer.fire_one(decode("raced", schedule), due[0][1], now))

    threads = [threading.Thread(target=fire, args=pair) for pair in read]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(fired) == 1, fired
    assert redis.llen("celery") == 1
    assert redis.zscore(keys.SCHEDULES_DUE, "raced") == ms(now), "moved on to the next tick"


def test_a_schedule_that_cannot_fire_stops_only_itself(own_redis_url: str) -> None:
    """A stored value no script can use (edited by hand) makes that schedule report a problem
    and leave the due set; the schedules due after it still fire."""
    settings = Settings(redis_url=own_redis_url)
    redis = Redis.from_url(own_redis_url)
    run = scripts.Scripts(redis)
    now = time.time()
    for schedule_id, late in (("broken", 60), ("healthy", 1)):
        run(scripts.schedule_put(
            schedule_id, "anonymous", mode="create", limit=0, now=now - 120, next_due=ms(now - late),
            enabled=True, fields={"task": "add", "celery_name": "taskgate.add", "every": "1.0",
                                  "anchor": ms(now - 120), "arguments": '{"x": 1, "y": 2}'}))
    redis.hset(keys.schedule("broken"), "missed", "many")  # its missed tick's HINCRBY fails
    firer = Firer(create_celery_app(settings), redis, settings, ["taskgate.add"])
    assert firer.fire_due(now) == 1
    assert redis.zscore(keys.SCHEDULES_DUE, "broken") is None
    assert "it cannot fire" in redis.hget(keys.schedule("broken"), "problem").decode()
    assert redis.hget(keys.schedule("healthy"), "last_task_id") is not None


def test_a_tick_is_a_trace_of_its_own_linked_to_its_schedule(own_redis_url: str) -> None:
    """Traced, each tick's run is a PRODUCER span starting a new trace (no request asked for
    it), linked to the span that created its schedule (kept in its hash), or, for a schedule
    without one, to a trace id made from the schedule's id; the record and message carry it."""
    settings = Settings(redis_url=own_redis_url)
    redis = Redis.from_url(own_redis_url)
    now = time.time()
    created = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for schedule_id, extra in (("made", {"traceparent": created}), ("declared", {})):
        scripts.Scripts(redis)(scripts.schedule_put(
            schedule_id, "anonymous", mode="create", limit=0, now=now - 2, next_due=ms(now - 1), enabled=True,
            fields={"task": "add", "celery_name": "taskgate.add", "every": "60.0", "anchor": ms(now - 2),
                    "arguments": '{"x": 1, "y": 2}', **extra}))
    firer = Firer(create_celery_app(settings), redis, settings, ["taskgate.add"])
    with otel.in_memory() as exporter:
        assert firer.fire_due(now) == 2
        spans = {dict(span.attributes or {})["taskgate.schedule.id"]: span
                 for span in exporter.get_finished_spans()}
    messages = [orjson.loads(raw) for raw in reversed(redis.lrange("celery", 0, -1))]
    for schedule_id, span in spans.items():
        assert span.name == "taskgate submit add" and span.parent is None, "a trace of its own"
        (link,) = span.links
        assert dict(link.attributes or {})["taskgate.schedule.id"] == schedule_id
        task_id = redis.hget(keys.schedule(schedule_id), "last_task_id").decode()
        assert redis.hget(keys.record(task_id), "trace_id").decode() == f"{span.context.trace_id:032x}"
        (message,) = [message for message in messages if message["headers"]["id"] == task_id]
        assert message["headers"]["traceparent"].split("-")[1:3] == [
            f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"]
    made, declared = spans["made"].links[0].context, spans["declared"].links[0].context
    assert (f"{made.trace_id:032x}", f"{made.span_id:016x}") == ("0af7651916cd43dd8448eb211c80319c",
                                                                 "b7ad6b7169203331")
    assert f"{declared.trace_id:032x}" == schedule_trace_id("declared") and declared.span_id == 0
    assert spans["made"].context.trace_id != spans["declared"].context.trace_id
    firer.fire_due(now + 61)  # untraced: no trace id kept
    task_id = redis.hget(keys.schedule("made"), "last_task_id").decode()
    assert redis.hget(keys.record(task_id), "trace_id") is None

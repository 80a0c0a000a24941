"""Every record script, run directly against the session's Valkey: its effect on the record,
the indexes and the queue, read back with plain commands. Plus static checks on the Lua
sources: keys bound to named locals, only declared keys touched, state names that exist."""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from typing import cast

import orjson
import pytest
from redis import Redis

from taskgate.constants import ANONYMOUS, HEARTBEAT_TTL, LATENCY_BUCKETS, MINUTES_KEPT, STATS_TTL
from taskgate.producer.overview import MINUTE_FIELDS
from taskgate.records import decode, decode_event, keys, scripts
from taskgate.records.scripts import Scripts
from taskgate.states import TaskState

OWNER = "script-tests"
SOURCES = resources.files("taskgate.records").joinpath("scripts")


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    """The session's Valkey; what the test made there is deleted after it (other tests, and
    ``taskgate doctor``'s, read the same server)."""
    client = Redis.from_url(redis_url)
    yield client
    made = [key.decode() for key in client.scan_iter(match=f"{keys.RECORD_PREFIX}{{script-test-*", count=1000)]
    ids = [key.removeprefix(keys.RECORD_PREFIX)[1:-1] for key in made]
    if ids:
        client.delete(*made, *(keys.alive(task_id) for task_id in ids))
        for index in (keys.INDEX, keys.DELAYED, keys.DEAD):
            client.zrem(index, *ids)
    client.delete(keys.inflight(OWNER), keys.owner_index(OWNER))
    client.close()


@pytest.fixture
def run(redis: Redis) -> Scripts:
    return Scripts(redis)


def new_id() -> str:
    return f"script-test-{uuid.uuid4()}"


def record(redis: Redis, task_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis.hgetall(keys.record(task_id)).items()}


def submit(run: Scripts, task_id: str, **changes: object) -> scripts.SubmitReply:
    arguments: dict[str, object] = dict(
        now=time.time(), owner=OWNER, ttl=60, horizon=time.time() - 60,
        message=b"the message", queue=f"q-{task_id}", due=None, idempotency=None, digest="",
        rate_limit=0, inflight_limit=0, deadline=None, idempotency_ttl=60)
    if changes.pop("anonymous", False):
        arguments["owner"] = ANONYMOUS
    arguments.update(changes)
    return run(scripts.submit(scripts.Enqueue(task_id, "add", **arguments)))  # type: ignore[arg-type]


def started(run: Scripts, task_id: str, max_deliveries: int = 3, arguments: bytes = b'{"x": 1}',
            owner: str = OWNER) -> str:
    return run(scripts.start(task_id, owner, name="add", now=time.time(), ttl=60,
                             max_deliveries=max_deliveries, node="node-1", failure_ttl=90,
                             arguments=arguments)).verdict


# --- the sources --------------------------------------------------------------------------------

def lua(name: str) -> str:
    return SOURCES.joinpath(f"{name}.lua").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", scripts.NAMES)
def test_each_script_binds_its_keys_to_names_and_touches_no_other(name: str) -> None:
    # admission.lua's keys depend on the lanes stored in records, workflow.lua's on the ids stored
    # in a workflow: they build them themselves (see the next test, and test_workflow_scripts.py);
    # every other line of every script uses only the keys it was given
    source = scripts.source(name).replace(scripts.source("admission"), "").replace(scripts.source("workflow"), "")
    bound: set[str] = set()
    for line in source.splitlines():
        if "KEYS[" in line and not line.lstrip().startswith("--"):
            assert re.match(r"\s*local [\w, ]+=|\s+KEYS\[", line) or "KEYS[2 * i" in line, \
                f"{name}: KEYS used outside a binding: {line}"
    for names, _values in re.findall(r"local ([\w, ]+)=\s*((?:KEYS\[(?:\d+|k \+ \d+)\][,\s]*)+)", source):
        bound.update(n.strip() for n in names.split(","))
    bound.update({"record", "queue"} if name == "release" else set())  # per task, from KEYS pairs
    for var, items in re.findall(r"for _, (\w+) in ipairs\(\{([\w, ]+)\}\)", source):
        if {item.strip() for item in items.split(",")} <= bound:
            bound.add(var)  # a loop over declared keys
    for command, target in re.findall(r"redis\.call\('(\w+)', (\w+)", source):
        assert target in bound, f"{name}: {command} on {target}, which is not a declared key"
    assert "string.sub(" not in source, "no key name is taken apart in Lua"


def test_admission_builds_its_keys_as_records_keys_does() -> None:
    source = lua("admission")
    for constant, value in [("ADMISSION_PREFIX", keys.ADMISSION_PREFIX), ("LIMITS_DECLARED", keys.LIMITS_DECLARED),
                            ("LIMITS_OVERRIDE", keys.LIMITS_OVERRIDE), ("ADMIT_DUE", keys.ADMIT_DUE),
                            ("OUTBOX", keys.OUTBOX), ("RECORD_PREFIX", keys.RECORD_PREFIX),
                            ("FAIR", keys.FAIR), ("FAIR_WEIGHTS", keys.FAIR_WEIGHTS),
                            ("FAIR_GROUP", keys.FAIR_GROUP_PREFIX),
                            ("EVENTS_PREFIX", keys.EVENTS_PREFIX)]:
        assert f"local {constant} = '{value}'\n" in source, constant
    assert "ADMISSION_PREFIX .. #name .. ':' .. name .. ':' .. family .. ':' .. (part or '')" in source
    assert keys.admission("send", "wait", '["a",""]') == 'taskgate:adm:4:send:wait:["a",""]'
    assert "RECORD_PREFIX .. '{' .. task_id .. '}'" in source and keys.record("x") == f"{keys.RECORD_PREFIX}{{x}}"


def test_state_names_in_the_scripts_are_task_states() -> None:
    states = {state.value for state in TaskState}
    found: set[str] = set()
    # (the workflow scripts' own states: test_workflow_scripts.py; a webhook delivery's:
    # test_webhook_scripts.py and test_webhook_delivery_scripts.py)
    for name in (*(name for name in scripts.NAMES if not name.startswith(("workflow", "webhook"))), "transition"):
        source = lua(name)
        found |= set(re.findall(r"\b(?:state|before|fields\[3\])\s*[~=]=\s*'(\w+)'", source))
        found |= set(re.findall(r"'HSET', \w+, 'state', '(\w+)'", source))
    assert found and found <= states, found - states
    ended = re.search(r"local ENDED = \{(.*)\}", lua("transition"))
    assert ended is not None
    assert set(re.findall(r"(\w+) = true", ended[1])) == {s.value for s in TaskState if s.is_terminal}


def test_constants_mirrored_in_lua_match_python() -> None:
    source = lua("transition")
    buckets = re.search(r"local LATENCY_BUCKETS = \{(.*)\}", source)
    assert buckets is not None and tuple(float(b) for b in buckets[1].split(",")) == LATENCY_BUCKETS
    assert f"local STATS_TTL = {STATS_TTL}\n" in source
    assert f"local MINUTES_KEPT = {MINUTES_KEPT}  --" in source
    assert f"local HEARTBEAT_TTL = {HEARTBEAT_TTL}\n" in source
    assert f"local ANONYMOUS = '{ANONYMOUS}'" in source
    fields = ", ".join(f"'{name}'" for name in MINUTE_FIELDS)  # what GET /summary reads per minute
    assert f"local MINUTE_FIELDS = {{{fields}}}\n" in source


def test_a_task_keys_share_one_hash_tag() -> None:
    tags = {re.search(r"\{(.*)\}", key)[1] for key in  # type: ignore[index]
            (keys.record("t1"), keys.events("t1"), keys.alive("t1"))}
    assert tags == {"t1"}
    assert keys.task_of_channel(keys.events("a-b")) == "a-b"


# --- submit -------------------------------------------------------------------------------------

def test_submit_records_indexes_and_pushes(redis: Redis, run: Scripts) -> None:
    task_id = new_id()
    assert submit(run, task_id, inflight_limit=10) == scripts.SubmitReply("queued")
    stored = record(redis, task_id)
    assert (stored["name"], stored["state"], stored["owner"], stored["attempts"]) == ("add", "queued", OWNER, "0")
    assert redis.ttl(keys.record(task_id)) == -1, "no TTL while it may run"
    assert redis.zscore(keys.INDEX, task_id) is not None
    assert redis.zscore(keys.owner_index(OWNER), task_id) is not None
    assert redis.zscore(keys.inflight(OWNER), task_id) is not None
    assert redis.lrange(f"q-{task_id}", 0, -1) == [b"the message"]
    assert submit(run, task_id) == scripts.SubmitReply("queued"), "a retried call changes nothing"
    assert redis.llen(f"q-{task_id}") == 1
    redis.delete(f"q-{task_id}")


def test_submit_keeps_a_trace_id_only_when_given(redis: Redis, run: Scripts) -> None:
    traced, untraced = new_id(), new_id()
    submit(run, traced, trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331")
    submit(run, untraced)
    assert record(redis, traced)["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    decoded = decode(traced, redis.hgetall(keys.record(traced)))
    assert (decoded.trace_id, decoded.span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert "trace_id" not in record(redis, untraced) and "span_id" not in record(redis, untraced)
    assert redis.object("encoding", keys.record(traced)) == b"listpack"  # the compact encoding kept
    redis.delete(f"q-{traced}", f"q-{untraced}")


def test_submit_with_a_due_time_parks_the_message(redis: Redis, run: Scripts) -> None:
    task_id = new_id()
    due = time.time() + 3600
    submit(run, task_id, due=due)
    assert redis.llen(f"q-{task_id}") == 0
    assert redis.zscore(keys.DELAYED, task_id) == pytest.approx(due)
    stored = record(redis, task_id)
    assert stored["message"] == "the message" and stored["queue"] == f"q-{task_id}"
    redis.zrem(keys.DELAYED, task_id)


def test_submit_idempotency_replays_or_conflicts(redis: Redis, run: Scripts) -> None:
    key = f"idem-{uuid.uuid4()}"
    first = new_id()
    assert submit(run, first, idempotency=key, digest="d1").kind == "queued"
    assert submit(run, new_id(), idempotency=key, digest="d1") == scripts.SubmitReply("replayed", first)
    assert submit(run, new_id(), idempotency=key, digest="d2") == scripts.SubmitReply("conflict", first)
    assert 0 < redis.ttl(keys.idempotency(OWNER, key)) <= 60
    redis.delete(f"q-{first}")


def test_submit_quotas_and_deadline_refuse_without_a_trace(redis: Redis, run: Scripts) -> None:
    owner_rate = f"rate-{uuid.uuid4()}"
    ids = [new_id() for _ in range(3)]
    replies = [submit(run, task_id, owner=owner_rate, rate_limit=2) for task_id in ids]
    assert [reply.kind for reply in replies] == ["queued", "queued", "rate"]
    assert 59 < (replies[2].retry_after or 0) <= 60, "the window opened at the first submission"
    assert not redis.exists(keys.record(ids[2]))
    owner_busy = f"busy-{uuid.uuid4()}"
    ids = [new_id() for _ in range(2)]
    assert [submit(run, task_id, owner=owner_busy, inflight_limit=1).kind for task_id in ids] == [
        "queued", "inflight"]
    late = new_id()
    assert submit(run, late, deadline=time.time() - 5).kind == "late"
    assert not redis.exists(keys.record(late)) and redis.llen(f"q-{late}") == 0
    for owner in (owner_rate, owner_busy):
        redis.delete(keys.inflight(owner), keys.owner_index(owner), keys.rate(owner))


# --- the worker's transitions -------------------------------------------------------------------

def test_start_runs_once_and_marks_alive(redis: Redis, run: Scripts) -> None:
    task_id = new_id()
    submit(run, task_id)
    assert started(run, task_id) == "run"
    stored = record(redis, task_id)
    assert (stored["state"], stored["attempts"], stored["deliveries"], stored["worker"]) == (
        "started", "1", "1", "node-1")
    assert 0 < redis.ttl(keys.alive(task_id)) <= HEARTBEAT_TTL
    run(scripts.succeeded(task_id, OWNER, now=0.001, ttl=30, result=b"3"))
    assert started(run, task_id) == "finished", "a duplicate delivery is skipped"
    redis.delete(f"q-{task_id}")


def test_each_new_state_joins_the_timeline_which_keeps_the_first_and_latest(redis: Redis,
                                                                           run: Scripts) -> None:
    task_id = new_id()
    submit(run, task_id, now=1_700_000_000.25)
    assert started(run, task_id) == "run"
    run(scripts.progress(task_id, OWNER, b'{"percent": 5}'))  # same state: no entry
    feed = redis.pubsub(ignore_subscribe_messages=True)
    feed.subscribe(keys.events(task_id))
    feed.get_message(timeout=1)
    run(scripts.succeeded(task_id, OWNER, now=0.001, ttl=30, result=b"3"))
    published = feed.get_message(timeout=5)
    feed.close()
    assert published is not None
    # a run that went the straight way keeps no timeline field: its times imply it, and a field
    # over 64 bytes would make Redis keep the whole hash in its larger encoding
    assert "timeline" not in record(redis, task_id)
    assert redis.object("encoding", keys.record(task_id)) == b"listpack"
    timeline = orjson.loads(orjson.loads(published["data"])["timeline"])  # what a change publishes
    assert [entry["state"] for entry in timeline] == ["queued", "started", "succeeded"]
    assert timeline[0] == {"state": "queued", "at": 1_700_000_000_250, "attempt": 0}
    assert timeline[1]["worker"] == "node-1" and timeline[1]["attempt"] == 1
    assert timeline[2]["at"] == 1, "at the record's finished_at (stored: 1 ms after the epoch)"
    assert timeline[1]["at"] == int(record(redis, task_id)["started_at"])
    read = decode(task_id, redis.hgetall(keys.record(task_id))).timeline  # what a reader rebuilds
    assert [(c.state.value, round(c.at.timestamp() * 1000), c.attempt, c.worker) for c in read] == \
        [(e["state"], e["at"], e["attempt"], e.get("worker")) for e in timeline]
    retried = new_id()  # a task that keeps changing state keeps a bounded timeline
    submit(run, retried)
    for _ in range(30):
        assert started(run, retried) == "run"
        run(scripts.park(retried, OWNER, due=time.time() + 3600, message=b"m", queue="q", error=b"{}"))
    timeline = orjson.loads(record(redis, retried)["timeline"])
    assert len(timeline) == 50 and timeline[0]["state"] == "queued" and timeline[-1]["state"] == "retrying"
    assert abs(timeline[-1]["at"] / 1000 - time.time()) < 60, "retrying: no time of its own, Redis's clock"
    redis.hset(keys.record(retried), "timeline", b"not json")
    assert started(run, retried) == "run"
    assert [entry["state"] for entry in orjson.loads(record(redis, retried)["timeline"])] == ["started"]
    redis.delete(f"q-{task_id}", f"q-{retried}")


def test_an_ended_task_is_counted_in_its_minute_and_minutes_past_the_hour_are_deleted(
        redis: Redis, run: Scripts) -> None:
    stats = f"script-test-stats-{uuid.uuid4()}"  # a private stats hash: other tests end tasks too
    seconds, micros = redis.time()
    minute = (seconds * 1000 + micros // 1000) // 60000
    redis.hset(stats, mapping={"minute:trimmed": minute - 100, f"minute:{minute - 90}:succeeded": 5,
                               f"minute:{minute - 90}:wait_n": 5, f"minute:{minute - 30}:failed": 2})
    task_id = new_id()
    submit(run, task_id, now=time.time() - 2)
    assert started(run, task_id) == "run"
    call = scripts.succeeded(task_id, OWNER, now=0.001, ttl=30, result=b"3")
    try:
        run(dataclasses.replace(call, keys=[*call.keys[:3], stats, *call.keys[4:]]))
        counted = {k.decode(): float(v) for k, v in redis.hgetall(stats).items() if b"minute:" in k}
    finally:
        redis.delete(stats)
    now = next(m for m in (minute, minute + 1) if f"minute:{m}:succeeded" in counted)  # the clock moved?
    assert counted.pop(f"minute:{now}:succeeded") == 1 and counted.pop(f"minute:{now}:wait_n") == 1
    assert 1.5 < counted.pop(f"minute:{now}:wait_sum") < 60
    assert counted == {"minute:trimmed": now - MINUTES_KEPT, f"minute:{minute - 30}:failed": 2}


def test_start_of_a_foreign_message_makes_a_record(redis: Redis, run: Scripts) -> None:
    task_id = new_id()
    assert started(run, task_id, owner=ANONYMOUS) == "run"
    assert record(redis, task_id)["name"] == "add"


def test_start_with_the_wrong_owner_names_the_right_one_and_changes_nothing(redis: Redis, run: Scripts) -> None:
    task_id = new_id()
    submit(run, task_id)
    reply = run(scripts.start(task_id, ANONYMOUS, name="add", now=time.time(), ttl=60, max_deliveries=3,
                              node="node-1", failure_ttl=90))
    assert reply == scripts.StartReply("owner", OWNER)
    assert record(redis, task_id)["state"] == "queued" and not redis.exists(keys.alive(task_id))
    assert started(run, task_id, owner=reply.owner or "") == "run"
    redis.delete(f"q-{task_id}")


def test_start_after_too_many_deliveries_dead_letters(redis: Redis, run: Scripts) -> None:
    task_id = new_id()
    submit(run, task_id)
    assert [started(run, task_id, max_deliveries=2, arguments=b"") for _ in range(3)] == [
        "run", "run", "arguments"]
    assert record(redis, task_id)["state"] == "started", "asking for the arguments changes nothing"
    assert started(run, task_id, max_deliveries=2) == "dead"
    stored = record(redis, task_id)
    assert (stored["state"], stored["dead_reason"], stored["args"]) == ("failed", "max_deliveries", '{"x": 1}')
    assert 80 < redis.ttl(keys.record(task_id)) <= 90, "a failure keeps the failure TTL"
    assert redis.zscore(keys.DEAD, task_id) is not None
    assert not redis.exists(keys.alive(task_id)), "an ended task is no longer alive"
    assert redis.zscore(keys.inflight(OWNER), task_id) is None
    redis.zrem(keys.DEAD, task_id)
    redis.delete(f"q-{task_id}")


def test_finish_publishes_and_ends(redis: Redis, run: Scripts) -> None:
    task_id = new_id()
    submit(run, task_id, inflight_limit=5)
    started(run, task_id)
    pubsub = redis.pubsub()
    pubsub.subscribe(keys.events(task_id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    before = int(redis.hget(keys.STATS, "done:add:succeeded") or 0)
    assert run(scripts.progress(task_id, OWNER, b'{"done": 1}')) == scripts.Moved("progress", True, TaskState.STARTED)
    assert redis.ttl(keys.record(task_id)) == -1
    assert run(scripts.succeeded(task_id, OWNER, now=time.time(), ttl=30, result=b"3")) == scripts.Moved(
        "succeeded", True, TaskState.SUCCEEDED)
    assert 0 < redis.ttl(keys.record(task_id)) <= 30
    events = [orjson.loads(pubsub.get_message(timeout=5)["data"]) for _ in range(2)]  # type: ignore[index]
    assert [(e["state"], e["seq"]) for e in events[-2:]] == [("started", "2"), ("succeeded", "3")]
    assert events[-1]["progress"] == '{"done": 1}' and events[-1]["result"] == "3"
    assert "message" not in events[-1]
    assert int(redis.hget(keys.STATS, "done:add:succeeded") or 0) == before + 1
    assert redis.zscore(keys.inflight(OWNER), task_id) is None
    assert not redis.exists(keys.alive(task_id))
    assert "deliveries" not in record(redis, task_id), "a success drops its delivery count"
    pubsub.close()
    redis.delete(f"q-{task_id}")


#: The state machine of a run's end, as finish.lua's MOVES has it: each move, the states it may
#: leave and the state it leaves the record in.
MOVES: dict[scripts.Move, tuple[set[str], TaskState]] = {
    "succeeded": ({"started"}, TaskState.SUCCEEDED),
    "failed": ({"started"}, TaskState.FAILED),
    "cancelled": ({"started"}, TaskState.CANCELLED),
    "retrying": ({"started"}, TaskState.RETRYING),
    "refused": ({"queued", "retrying"}, TaskState.FAILED),
}
NOW, DUE = 1_795_560_962.25, 1_795_561_000.5


def move_call(move: scripts.Move, task_id: str) -> scripts.Call[scripts.Moved]:
    if move == "succeeded":
        return scripts.succeeded(task_id, OWNER, now=NOW, ttl=30, result=b'{"n": 3}')
    if move == "failed":
        return scripts.failed(task_id, OWNER, now=NOW, ttl=40, error=b'{"type": "E"}')
    if move == "cancelled":
        return scripts.cancelled(task_id, OWNER, now=NOW, ttl=30)
    if move == "retrying":
        return scripts.retrying(task_id, OWNER, due=DUE, error=b'{"type": "T"}')
    return scripts.refused(task_id, OWNER, now=NOW, ttl=40, error=b'{"type": "BrokerUnavailable"}')


def in_state(redis: Redis, run: Scripts, state: str) -> str:
    """A submitted task brought to ``state`` by the scripts that make it (a TTL given to one
    that has none, for the scripts to keep or take away)."""
    task_id = new_id()
    submit(run, task_id)
    redis.delete(f"q-{task_id}")
    if state in ("started", "retrying", "succeeded", "failed"):
        assert started(run, task_id) == "run"
    if state == "retrying":
        run(scripts.park(task_id, OWNER, due=time.time() + 3600, message=b"m", queue="q", error=b"{}"))
    elif state in ("succeeded", "failed"):
        assert run(move_call(cast(scripts.Move, state), task_id)).changed
    elif state == "cancelled":
        assert run(scripts.cancel(task_id, OWNER, now=time.time(), ttl=30)) == "cancelled"
    elif state == "expired":
        redis.hset(keys.record(task_id), mapping={"state": "expired", "finished_at": 1})
    if redis.ttl(keys.record(task_id)) == -1:
        redis.expire(keys.record(task_id), 1000)
    assert record(redis, task_id)["state"] == state
    return task_id


@pytest.mark.parametrize(("move", "before"), [(move, before) for move, (states, _) in MOVES.items()
                                              for before in sorted(states)])
def test_each_allowed_move_sets_its_fields_and_publishes(redis: Redis, run: Scripts, move: scripts.Move,
                                                         before: str) -> None:
    task_id = in_state(redis, run, before)
    was = record(redis, task_id)
    state = MOVES[move][1]
    assert run(move_call(move, task_id)) == scripts.Moved(move, True, state)
    now = record(redis, task_id)
    assert now["state"] == state and int(now["seq"]) == int(was.get("seq", 0)) + 1, "published once"
    changed = {name: value for name, value in now.items()
               if was.get(name) != value and name not in ("seq", "timeline")}
    assert changed == {"state": state.value, **{
        "succeeded": {"finished_at": "1795560962250", "result": '{"n": 3}'},
        "failed": {"finished_at": "1795560962250", "error": '{"type": "E"}'},
        "cancelled": {"finished_at": "1795560962250"},
        "retrying": {"next_attempt_at": "1795561000500", "error": '{"type": "T"}'},
        "refused": {"finished_at": "1795560962250", "error": '{"type": "BrokerUnavailable"}'},
    }[move]}
    assert set(was) - set(now) - {"timeline"} == ({"deliveries"} if move == "succeeded" else set())
    assert decode(task_id, redis.hgetall(keys.record(task_id))).timeline[-1].state == state
    ttl = redis.ttl(keys.record(task_id))
    if state.is_terminal:
        assert 0 < ttl <= (40 if move in ("failed", "refused") else 30), "an ended record expires"
        assert redis.zscore(keys.inflight(OWNER), task_id) is None and not redis.exists(keys.alive(task_id))
    else:
        assert ttl == -1, "a retrying record may wait for longer than any TTL"


@pytest.mark.parametrize(("move", "before"), [(move, before.value) for move, (states, _) in MOVES.items()
                                              for before in TaskState if before.value not in states])
def test_each_refused_move_changes_nothing_and_names_the_state_found(redis: Redis, run: Scripts,
                                                                    move: scripts.Move, before: str) -> None:
    """A duplicate delivery whose record already ended, a late end of a run that went back to its
    queue, a run that never started: the record is left as it is, and nothing is published."""
    task_id = in_state(redis, run, before)
    was, ttl = record(redis, task_id), redis.ttl(keys.record(task_id))
    assert run(move_call(move, task_id)) == scripts.Moved(move, False, TaskState(before))
    assert record(redis, task_id) == was, "seq not bumped: nothing published"
    assert 0 < redis.ttl(keys.record(task_id)) <= ttl, "its TTL kept"


@pytest.mark.parametrize("move", [*MOVES, "progress"])
def test_a_move_on_a_missing_record_makes_none(redis: Redis, run: Scripts, move: str) -> None:
    task_id = new_id()
    call = scripts.progress(task_id, OWNER, b"{}") if move == "progress" else move_call(
        cast(scripts.Move, move), task_id)
    assert run(call) == scripts.Moved(move, False, None)
    assert not redis.exists(keys.record(task_id))


@pytest.mark.parametrize("before", [state.value for state in TaskState])
def test_progress_is_kept_only_while_started(redis: Redis, run: Scripts, before: str) -> None:
    task_id = in_state(redis, run, before)
    was, ttl = record(redis, task_id), redis.ttl(keys.record(task_id))
    moved = run(scripts.progress(task_id, OWNER, b'{"done": 2}'))
    assert moved == scripts.Moved("progress", before == "started", TaskState(before))
    now = record(redis, task_id)
    if before == "started":
        assert now.pop("progress") == '{"done": 2}' and int(now.pop("seq")) == int(was.pop("seq", 0)) + 1
        assert now == was, "only the progress changed, and it was published"
    else:
        assert now == was, "a late write after its end or requeue is dropped"
    assert 0 < redis.ttl(keys.record(task_id)) <= ttl, "its TTL kept"


def test_park_then_release_moves_the_due_message(redis: Redis, run: Scripts) -> None:
    task_id, queue = new_id(), f"q-park-{uuid.uuid4()}"
    submit(run, task_id)
    started(run, task_id)
    run(scripts.park(task_id, OWNER, due=time.time() - 1, message=b"attempt 2", queue=queue, error=b'{"t": 1}'))
    stored = record(redis, task_id)
    assert (stored["state"], stored["deliveries"]) == ("retrying", "0")
    assert redis.ttl(keys.record(task_id)) == -1
    assert run(scripts.release(time.time(), [(task_id, "another-queue")])) == 0, "queue changed: kept"
    assert redis.zscore(keys.DELAYED, task_id) is not None
    assert run(scripts.release(time.time(), [(task_id, queue)])) == 1
    assert redis.lrange(queue, 0, -1) == [b"attempt 2"]
    assert redis.zscore(keys.DELAYED, task_id) is None
    assert "message" not in record(redis, task_id)
    assert run(scripts.release(time.time(), [(task_id, queue)])) == 0, "pushed exactly once"
    redis.delete(queue, f"q-{task_id}")


def test_release_drops_a_task_cancelled_meanwhile(redis: Redis, run: Scripts) -> None:
    task_id = new_id()
    submit(run, task_id, due=time.time() + 3600)
    redis.zadd(keys.DELAYED, {task_id: time.time() - 1})
    redis.hset(keys.record(task_id), "state", "cancelled")
    assert run(scripts.release(time.time(), [(task_id, f"q-{task_id}")])) == 0
    assert redis.zscore(keys.DELAYED, task_id) is None and redis.llen(f"q-{task_id}") == 0


def test_lost_changes_only_a_started_record(redis: Redis, run: Scripts) -> None:
    task_id = new_id()
    submit(run, task_id)
    assert run(scripts.lost(task_id, OWNER, now=time.time(), ttl=30, error=b"{}", state="failed")) is (
        TaskState.QUEUED)
    started(run, task_id)
    assert run(scripts.lost(task_id, OWNER, now=time.time(), ttl=30, error=b"{}", state="queued")) is (
        TaskState.QUEUED)
    assert redis.ttl(keys.record(task_id)) == -1
    started(run, task_id)
    assert run(scripts.lost(task_id, OWNER, now=time.time(), ttl=30, error=b"{}", state="failed")) is (
        TaskState.FAILED)
    assert 0 < redis.ttl(keys.record(task_id)) <= 30
    redis.delete(f"q-{task_id}")


def test_park_and_dead_change_nothing_once_the_run_left_started(redis: Redis, run: Scripts) -> None:
    task_id = new_id()
    submit(run, task_id)
    started(run, task_id)
    assert run(scripts.succeeded(task_id, OWNER, now=time.time(), ttl=60, result=b"1")).changed
    before = record(redis, task_id)
    assert run(scripts.park(task_id, OWNER, due=time.time(), message=b"m", queue="q", error=b"{}")) == "succeeded"
    assert run(scripts.dead(task_id, OWNER, ttl=60, now=time.time(), error=b"{}", arguments=b"{}",
                            reason="max_retries")) == "already:succeeded"
    assert record(redis, task_id) == before
    assert redis.zscore(keys.DEAD, task_id) is None and redis.zscore(keys.DELAYED, task_id) is None
    queued = new_id()
    submit(run, queued)
    assert run(scripts.park(queued, OWNER, due=time.time(), message=b"m", queue="q", error=b"{}")) == "queued"
    assert record(redis, queued)["state"] == "queued"


def test_dead_then_requeue(redis: Redis, run: Scripts) -> None:
    task_id, queue = new_id(), f"q-requeue-{uuid.uuid4()}"
    submit(run, task_id)
    started(run, task_id)
    run(scripts.cancel(task_id, OWNER, now=time.time(), ttl=30))  # asked, but it failed for good first
    run(scripts.dead(task_id, OWNER, ttl=30, now=time.time(), error=b'{"type": "X"}', arguments=b'{"x": 1}',
                     reason="max_retries"))
    stored = record(redis, task_id)
    assert (stored["state"], stored["args"], stored["dead_reason"]) == ("failed", '{"x": 1}', "max_retries")
    assert redis.zscore(keys.DEAD, task_id) is not None
    assert run(scripts.requeue(task_id, OWNER, queue=queue, message=b"again", now=time.time(),
                               trace_id="a" * 32, span_id="b" * 16)) == "queued"
    stored = record(redis, task_id)
    assert (stored["trace_id"], stored["span_id"]) == ("a" * 32, "b" * 16), "its new run's trace and span"
    assert (stored["state"], stored["attempts"], "dead_reason" in stored, "worker" in stored) == (
        "queued", "0", False, False)
    assert "cancel_requested_at" not in stored and "cancel" not in stored, "a fresh run, not cancelled"
    assert redis.ttl(keys.record(task_id)) == -1
    assert redis.lrange(queue, 0, -1) == [b"again"]
    assert redis.zscore(keys.inflight(OWNER), task_id) is not None
    assert run(scripts.requeue(task_id, OWNER, queue=queue, message=b"again", now=time.time())) == "missing"
    redis.delete(queue, f"q-{task_id}")


def test_unknown_remembers_the_first_time(redis: Redis, run: Scripts) -> None:
    assert run(scripts.unknown(new_id(), time.time())) is None
    task_id = new_id()
    submit(run, task_id)
    first = run(scripts.unknown(task_id, 1000.0))
    assert first == (TaskState.QUEUED, 1000.0)
    assert run(scripts.unknown(task_id, 2000.0)) == first
    redis.delete(f"q-{task_id}")


# --- the API's control --------------------------------------------------------------------------

def test_cancel_by_state(redis: Redis, run: Scripts) -> None:
    waiting = new_id()
    submit(run, waiting, due=time.time() + 3600)
    assert run(scripts.cancel(waiting, OWNER, now=time.time(), ttl=30)) == "cancelled"
    assert redis.zscore(keys.DELAYED, waiting) is None
    assert "message" not in record(redis, waiting)
    assert 0 < redis.ttl(keys.record(waiting)) <= 30
    assert run(scripts.cancel(waiting, OWNER, now=time.time(), ttl=30)) == "already:cancelled"
    running = new_id()
    submit(run, running)
    started(run, running)
    assert run(scripts.cancel(running, OWNER, now=time.time(), ttl=30)) == "cancelling"
    assert record(redis, running)["cancel"] == "1"
    assert started(run, running) == "cancelled", "a flagged task never starts again"
    assert run(scripts.cancel(new_id(), OWNER, now=time.time(), ttl=30)) == "missing"
    redis.delete(f"q-{running}")


def test_cancel_keeps_when_it_was_first_asked_whatever_the_task_then_ends_in(redis: Redis, run: Scripts) -> None:
    """A running task that never checks the flag runs to its end: its record still says that,
    and when, cancel was asked (the first ask; a second keeps it), in the hash, in what the end
    published, and in the typed record."""
    running = new_id()
    submit(run, running)
    started(run, running)
    assert run(scripts.cancel(running, OWNER, now=1795560962.25, ttl=30)) == "cancelling"
    assert record(redis, running)["cancel_requested_at"] == "1795560962250"
    assert run(scripts.cancel(running, OWNER, now=1795560999.0, ttl=30)) == "cancelling"
    assert record(redis, running)["cancel_requested_at"] == "1795560962250", "a second ask keeps the first"
    pubsub = redis.pubsub()
    pubsub.subscribe(keys.events(running))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    # the worker's end of a task that never looked at the flag
    assert run(scripts.succeeded(running, OWNER, now=time.time(), ttl=30, result=b"3")).changed
    published = decode_event(running, pubsub.get_message(timeout=5)["data"])  # type: ignore[index]
    pubsub.close()
    asked = datetime.fromtimestamp(1795560962.25, tz=UTC)
    stored = decode(running, redis.hgetall(keys.record(running)))
    for view in (published, stored):
        assert (view.state, view.result, view.cancel_requested_at) == (TaskState.SUCCEEDED, 3, asked)
        assert not view.unreadable
    # a queued task is cancelled at once: asked and ended at the same time
    waiting = new_id()
    submit(run, waiting)
    assert run(scripts.cancel(waiting, OWNER, now=1795560962.5, ttl=30)) == "cancelled"
    fields = record(redis, waiting)
    assert fields["cancel_requested_at"] == fields["finished_at"] == "1795560962500"
    redis.delete(f"q-{running}", f"q-{waiting}")

"""The worker's task base class with the session's real worker: the owner travels in the
message, so starting a task needs no read of its record, and its end leaves the owner's
in-flight set."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from taskgate.auth import Caller
from taskgate.producer import Options, Producer
from taskgate.records import TaskRecord, keys
from taskgate.states import TaskState

from ..helpers import lines, wait_for
from ..producer.test_producer import with_producer


def test_the_owner_travels_in_the_message_and_the_end_leaves_its_in_flight_set(
        redis_url: str, worker: object) -> None:
    caller = Caller(owner=f"ann-{uuid.uuid4().hex[:6]}", admin=False)

    async def action(producer: Producer) -> None:
        spec = producer.spec("owner_header")
        # delayed a little, so it is surely still in flight when counted (an instant task on an
        # idle worker can end before the count is read)
        submission = await producer.submitter.submit(spec, spec.args_model(), Options(countdown=1), caller=caller)
        assert await producer.backend.redis.zcard(keys.inflight(caller.owner)) == 1
        record = await producer.reader.wait(submission.task_id, 30, caller)
        assert (record.state, record.result) == (TaskState.SUCCEEDED, caller.owner)
        assert await producer.backend.redis.zcard(keys.inflight(caller.owner)) == 0
    with_producer(redis_url, action, max_in_flight=5)


def test_cancel_asked_of_a_running_task_is_kept_however_it_ends(redis_url: str, worker: object,
                                                                 tmp_path: Path) -> None:
    """A sync task that never checks runs to its end (once) and ends ``succeeded``; an
    ``async def`` task is cancelled at its next ``await`` and ends ``cancelled``: both typed
    records say when cancel was asked. Each task logs its own starts and ends."""
    sync_log, async_log = tmp_path / "sync.log", tmp_path / "async.log"

    async def action(producer: Producer) -> None:
        made: dict[str, str] = {}
        for name, log in (("counted", sync_log), ("async_steps", async_log)):
            spec = producer.spec(name)
            arguments = spec.args_model(log=str(log), token=name, seconds=4)
            made[name] = (await producer.submitter.submit(spec, arguments)).task_id
        asked: dict[str, TaskRecord] = {}
        for name, log in (("counted", sync_log), ("async_steps", async_log)):
            await asyncio.to_thread(wait_for, lambda log=log: bool(lines(log)), 20, f"{name} to start")
            asked[name] = await producer.control.cancel(made[name])
        for name, when in asked.items():
            assert when.state is TaskState.STARTED and when.cancel_requested_at is not None
            record = await producer.reader.wait(made[name], 20)
            assert record.cancel_requested_at == when.cancel_requested_at
            assert record.started_at and record.finished_at
            assert record.started_at <= when.cancel_requested_at <= record.finished_at
            if name == "counted":
                assert (record.state, record.result) == (TaskState.SUCCEEDED, "counted")
            else:
                assert record.state is TaskState.CANCELLED
        assert [line.split()[0] for line in lines(sync_log)] == ["start", "end"], "ran once, to its end"
        assert [line.split()[0] for line in lines(async_log)] == ["start", "cancelled"]
    with_producer(redis_url, action)

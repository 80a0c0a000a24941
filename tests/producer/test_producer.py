"""The producer as a library, in this process: submit, read, wait, cancel, forget and the dead
letters, against the session's Valkey and its real worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from redis import Redis

from taskgate.config import Settings
from taskgate.exceptions import Conflict, QuotaExceeded, TaskNotFound
from taskgate.producer import SYSTEM, Options, Producer
from taskgate.records import keys
from taskgate.states import TaskState

from .. import helpers, sample_tasks  # noqa: F401  (declares the sample tasks in this process)

T = TypeVar("T")


def settings(redis_url: str, **changes: object) -> Settings:
    return Settings(redis_url=redis_url, task_modules=["tests.sample_tasks"], data_dir=helpers.DATA_DIR,
                    **changes)  # type: ignore[arg-type]


def with_producer(redis_url: str, action: Callable[[Producer], Awaitable[T]], **changes: object) -> T:
    async def main() -> T:
        producer = Producer.from_settings(settings(redis_url, **changes))
        try:
            return await action(producer)
        finally:
            await producer.close()
    return asyncio.run(main())


def test_submit_wait_read_and_list(redis_url: str, worker: object) -> None:
    async def action(producer: Producer) -> None:
        spec = producer.spec("add")
        submission = await producer.submitter.submit(spec, spec.args_model(x=2, y=3))
        record = await producer.reader.wait(submission.task_id, 30)
        assert (record.state, record.result, record.attempts) == (TaskState.SUCCEEDED, 5, 1)
        assert record.created_at and record.started_at and record.finished_at
        assert record.created_at <= record.started_at <= record.finished_at
        assert await producer.reader.get(submission.task_id) == record
        page, _ = await producer.reader.history(state=TaskState.SUCCEEDED, name="add", limit=100, before=None)
        assert submission.task_id in [listed.task_id for listed in page]
        many = await producer.reader.wait_many([submission.task_id, "no-such-task"], 1)
        assert many[0] is not None and many[0].state is TaskState.SUCCEEDED and many[1] is None
    with_producer(redis_url, action)


def test_an_idempotency_key_replays_and_a_different_body_conflicts(redis_url: str, worker: object) -> None:
    async def action(producer: Producer) -> None:
        spec, key = producer.spec("add"), f"k-{uuid.uuid4()}"
        first = await producer.submitter.submit(spec, spec.args_model(x=1, y=1), idempotency=key)
        again = await producer.submitter.submit(spec, spec.args_model(x=1, y=1), idempotency=key)
        assert (again.task_id, again.replayed, first.replayed) == (first.task_id, True, False)
        with pytest.raises(Conflict):
            await producer.submitter.submit(spec, spec.args_model(x=1, y=2), idempotency=key)
    with_producer(redis_url, action)


def test_a_cancelled_delayed_task_never_runs_and_can_be_forgotten(redis_url: str, worker: object) -> None:
    async def action(producer: Producer) -> None:
        spec = producer.spec("add")
        submission = await producer.submitter.submit(spec, spec.args_model(x=1, y=1), Options(countdown=3600))
        task_id = submission.task_id
        client = producer.backend.redis
        assert await client.zscore(keys.DELAYED, task_id) is not None
        record = await producer.control.cancel(task_id)
        assert record.state is TaskState.CANCELLED and record.started_at is None
        assert await client.zscore(keys.DELAYED, task_id) is None
        with pytest.raises(Conflict):
            await producer.control.cancel(task_id)
        await producer.control.forget(task_id)
        with pytest.raises(TaskNotFound):
            await producer.reader.get(task_id)
        assert await client.zscore(keys.INDEX, task_id) is None
    with_producer(redis_url, action)


def test_other_owners_tasks_read_as_unknown(redis_url: str, worker: object) -> None:
    from taskgate.auth import Caller

    async def action(producer: Producer) -> None:
        spec = producer.spec("add")
        ann, bob = Caller(owner=f"ann-{uuid.uuid4().hex[:6]}", admin=False), Caller(owner="bob", admin=False)
        submission = await producer.submitter.submit(spec, spec.args_model(x=1, y=1), caller=ann)
        assert (await producer.reader.get(submission.task_id, ann)).owner == ann.owner
        with pytest.raises(TaskNotFound):
            await producer.reader.get(submission.task_id, bob)
        with pytest.raises(TaskNotFound):
            await producer.control.cancel(submission.task_id, caller=bob)
        assert (await producer.reader.get(submission.task_id, SYSTEM)).owner == ann.owner
    with_producer(redis_url, action)


def test_the_rate_quota_counts_per_owner_from_the_first_submission(redis_url: str, worker: object) -> None:
    from taskgate.auth import Caller

    async def action(producer: Producer) -> None:
        spec = producer.spec("add")
        caller = Caller(owner=f"rate-{uuid.uuid4().hex[:6]}", admin=False)
        for _ in range(3):
            await producer.submitter.submit(spec, spec.args_model(x=1, y=1), caller=caller)
        with pytest.raises(QuotaExceeded) as refused:
            await producer.submitter.submit(spec, spec.args_model(x=1, y=1), caller=caller)
        assert 55 <= refused.value.retry_after <= 60
    with_producer(redis_url, action, submit_rate=3)


def test_an_exhausted_task_is_requeued_from_the_dead_letters(redis_url: str, worker: object,
                                                            tmp_path: Path) -> None:
    counter = tmp_path / "flaky"

    async def action(producer: Producer) -> None:
        spec = producer.spec("flaky")
        submission = await producer.submitter.submit(spec, spec.args_model(counter=str(counter), failures=4))
        task_id = submission.task_id
        record = await producer.reader.wait(task_id, 30)
        assert (record.state, record.dead_reason) == (TaskState.FAILED, "max_retries")
        letters, _ = await producer.reader.dead_letters(100, None)
        assert task_id in [letter.task_id for letter, _ in letters]
        requeued = await producer.control.requeue(task_id)  # the fifth call succeeds
        assert (requeued.state, requeued.attempts) in ((TaskState.QUEUED, 0), (TaskState.STARTED, 1),
                                                       (TaskState.SUCCEEDED, 1))
        record = await producer.reader.wait(task_id, 30)
        assert (record.state, record.dead_reason) == (TaskState.SUCCEEDED, None)
        assert record.result == 5 and counter.read_text() == "5", "four failed calls, then one that ran"
        with pytest.raises(TaskNotFound):
            await producer.control.drop(task_id)
    with_producer(redis_url, action)


def test_check_names_each_component(redis_url: str) -> None:
    assert with_producer(redis_url, lambda producer: producer.check()) == {"broker": "ok", "backend": "ok"}
    stopped = with_producer("redis://127.0.0.1:1/0", lambda producer: producer.check(), backend_timeout=0.5)
    assert stopped["broker"] != "ok" and stopped["backend"] != "ok"


def test_upgrade_keeps_records_of_the_earlier_layout_readable(redis_url: str) -> None:
    """What the API does at start, end to end: an old record is read under the new layout."""
    from taskgate.records.upgrade import upgrade

    task_id = f"old-{uuid.uuid4()}"
    client = Redis.from_url(redis_url)
    client.delete(keys.LAYOUT)
    client.hset(f"taskgate:task:{task_id}", mapping={"name": "add", "state": "succeeded", "result": "3",
                                                     "created_at": str(time.time())})
    client.expire(f"taskgate:task:{task_id}", 60)
    upgrade(client)
    record = with_producer(redis_url, lambda producer: producer.reader.get(task_id))
    assert (record.state, record.result, record.created_at is not None) == (TaskState.SUCCEEDED, 3, True)
    assert 0 < client.ttl(keys.record(task_id)) <= 60
    client.delete(keys.record(task_id))
    client.close()

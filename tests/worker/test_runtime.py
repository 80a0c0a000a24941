"""The worker's task base class with the session's real worker: the owner travels in the
message, so starting a task needs no read of its record, and its end leaves the owner's
in-flight set."""

from __future__ import annotations

import uuid

from taskgate.auth import Caller
from taskgate.producer import Options, Producer
from taskgate.records import keys
from taskgate.states import TaskState

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

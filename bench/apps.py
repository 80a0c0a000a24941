"""The reference apps the benchmark measures taskgate against, all on the same private Valkey.

* ``constant_app``: a bare async endpoint returning a constant (the HTTP ceiling);
* ``lpush_app``: one ``await redis.asyncio`` LPUSH of a ~1 KB payload (the broker-write ceiling);
* ``tutorial_app``: the tutorial's ``GET /add``, a blocking ``add.delay()`` inside ``async def``;
* ``celery_app``: the tutorial's Celery app and ``add`` task (raw Celery, for end-to-end runs),
  with ``square`` and ``total`` for a ``chord`` (the workflows section's contrast);
* ``library_app``: a user's own app whose endpoint does ``await add.submit()`` (taskgate as a
  library, ``Taskgate`` opened by its lifespan).

The Redis URL comes from ``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import os

from celery import Celery
from fastapi import FastAPI
from redis.asyncio import Redis

from taskgate import Taskgate
from taskgate.tasks.arithmetic import add as taskgate_add

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PAYLOAD = b"x" * 1024

constant_app = FastAPI()


@constant_app.get("/const")
async def constant() -> dict[str, bool]:
    return {"ok": True}


lpush_app = FastAPI()
_redis = Redis.from_url(REDIS_URL)


@lpush_app.get("/lpush")
async def lpush() -> dict[str, bool]:
    await _redis.lpush("bench:lpush", PAYLOAD)
    return {"ok": True}


celery_app = Celery("tutorial", broker=REDIS_URL, backend=REDIS_URL)
celery_app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                       task_default_queue="tutorial",  # apart from taskgate's queue on the same server
                       worker_hijack_root_logger=False)


@celery_app.task(name="tutorial.add")
def add(x: int, y: int) -> int:
    return x + y


@celery_app.task(name="tutorial.square")
def square(n: int) -> int:
    return n * n


@celery_app.task(name="tutorial.total")
def total(values: list[int]) -> int:
    return sum(values)


tutorial_app = FastAPI()


@tutorial_app.get("/add")
async def tutorial_add(x: int, y: int) -> dict[str, str]:
    task = add.delay(x, y)  # blocking, on the event loop: the tutorial's way
    return {"task_id": task.id}


library_gate = Taskgate(redis_url=REDIS_URL, auth=False)
library_app = FastAPI(lifespan=library_gate.lifespan)


@library_app.get("/add")
async def library_add(x: int, y: int) -> dict[str, str]:
    job = await taskgate_add.submit(x=x, y=y)
    return {"task_id": job.id}

"""A plain Celery app with nothing of taskgate in it: ``celery -A tests.plain_celery_app worker``
must run the messages taskgate puts on the broker (``tests/brokers/test_plain_celery.py``)."""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery

app = Celery("plain", broker=os.environ.get("PLAIN_BROKER_URL", "redis://127.0.0.1:1/0"))
app.conf.update(accept_content=["json"], task_serializer="json", worker_hijack_root_logger=False)


@app.task(name="taskgate.add")
def add(x: int, y: int) -> int:
    """Log the call (counted by the test), return the sum."""
    with Path(os.environ["PLAIN_LOG"]).open("a") as log:
        log.write(f"{x}+{y}\n")
    return x + y

"""What taskgate puts on the broker is an ordinary Celery message: an unmodified ``celery``
worker, from a plain Celery app that knows nothing of taskgate, runs it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from taskgate.config import Settings
from taskgate.producer import Options, Producer

from ..helpers import ROOT, kill, start_valkey, wait_for


def test_an_unmodified_celery_worker_runs_taskgates_messages(tmp_path: Path) -> None:
    server = start_valkey(tmp_path / "valkey")
    url = f"{server.connection_url}/0"
    log, worker_log = tmp_path / "calls", tmp_path / "worker.log"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")},
           "PLAIN_BROKER_URL": url, "PLAIN_LOG": str(log), "PYTHONPATH": str(ROOT)}
    with worker_log.open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tests.plain_celery_app", "worker",
                                   "--pool=solo", "--without-gossip", "--without-mingle", "--loglevel=INFO"],
                                  env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: b" ready." in worker_log.read_bytes() or worker.poll() is not None, 60, "celery worker ready")
        assert worker.poll() is None, worker_log.read_text()

        async def submit() -> None:
            producer = Producer.from_settings(Settings(redis_url=url))
            try:
                spec = producer.spec("add")
                await producer.submitter.submit(spec, spec.args_model(x=2, y=3))
                await producer.submitter.submit(spec, spec.args_model(x=4, y=5), Options(priority=7))
            finally:
                await producer.close()

        asyncio.run(submit())
        wait_for(lambda: log.exists() and len(log.read_text().splitlines()) == 2, 30,
                 "the plain worker to run both messages")
        assert sorted(log.read_text().splitlines()) == ["2+3", "4+5"]
        assert b"Received unregistered task" not in worker_log.read_bytes()
    finally:
        kill(worker.pid, signal.SIGKILL)
        worker.wait()
        server.stop()

"""What an opening Taskgate does in the background (``producer/startup.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..helpers import DATA_DIR

#: A user's app serving no task of its own: it submits the built-in add through the library.
BUILTINS_ONLY = """
import asyncio, logging, sys
from taskgate import Taskgate
from taskgate.tasks.arithmetic import add

logging.basicConfig(level=logging.WARNING)

async def main():
    async with Taskgate(redis_url=sys.argv[1], data_dir=sys.argv[2], auth=False) as tg:
        assert tg.catalogue == {}
        job = await add.submit(x=1, y=2)
        assert (await job.status()).name == "add"  # recorded (a worker on this Redis may run it)

asyncio.run(main())
"""


def test_an_app_serving_no_task_of_its_own_starts_without_a_warning(redis_url: str, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-c", BUILTINS_ONLY, redis_url, str(DATA_DIR)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "could not publish" not in run.stderr, run.stderr

"""mypy --strict on what a user writes: ``await add.submit(x=1, y=2)`` is a ``Job[int]``, wrong
arguments are type errors, and the README's app (examples/yourapp) checks clean."""

from __future__ import annotations

import os
import subprocess
import sys

from .helpers import OUTSIDE, ROOT


def mypy(*targets: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(ROOT / "examples" / "yourapp"),
                                                      str(ROOT / "examples")])}
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir=/dev/null", "--warn-unused-ignores", *targets],
                          capture_output=True, text=True, timeout=300, env=env, cwd=OUTSIDE)


def test_submit_is_typed_by_the_tasks_signature() -> None:
    checked = mypy(str(ROOT / "tests" / "typing" / "check_types.py"),
                   str(ROOT / "examples" / "yourapp" / "main.py"))
    assert checked.returncode == 0, checked.stdout + checked.stderr

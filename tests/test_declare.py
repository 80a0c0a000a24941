"""``@taskgate.task``: a task of the user's that takes a built-in's name replaces it everywhere,
in a process of its own (this one has the built-ins already)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from . import helpers

USER_TASKS = '''
import taskgate

@taskgate.task
def add(a: str) -> str:
    """The user's own add, of strings."""
    return a + a
'''

SCRIPT = '''
import asyncio
import httpx
import taskgate
import usertasks                                    # the user's modules first, as load() does
from taskgate.api import create_app
from taskgate.tasks.arithmetic import add as builtin

assert taskgate.registry.declared("add").func is usertasks.add.spec.func
try:
    builtin.delay
except AttributeError as exc:
    print("delay:", exc)
try:
    builtin.submit_sync(x=1, y=2)
except taskgate.UnknownTask as exc:
    print("submit:", exc)

async def main():
    app = create_app()
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        answer = await http.get("/add", params={"x": 1, "y": 2})
        print("GET /add:", answer.status_code, answer.json()["error"]["message"])
        own = await http.post("/tasks/add", json={"a": "z"})
        print("POST /tasks/add:", own.status_code)

asyncio.run(main())
'''


def test_a_users_task_replaces_the_builtin_of_the_same_name(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "usertasks.py").write_text(USER_TASKS)
    (tmp_path / "script.py").write_text(SCRIPT)
    env = helpers.env_for(redis_url, TASKGATE_TASK_MODULES="usertasks")
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    out = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("delay: 'delay': taskgate's built-in task 'add' is replaced"), lines
    assert lines[1].startswith("submit: no task named 'add'"), lines
    assert lines[2].startswith("GET /add: 422 GET /add submits the task named add, which here is "
                               "usertasks.add and does not take the integers x and y"), lines
    assert lines[3] == "POST /tasks/add: 202", lines

"""The test kit (``taskgate.pytest_plugin``, README "Testing your app") as a user's project meets
it: README's own files, read from README.md, run by pytest in a directory of their own, with the
plugin loaded through its entry point."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import ROOT

pytest_plugins = ["pytester"]

USE = "### Use it in your own FastAPI app"
TESTING = "### Testing your app"


def readme_section(heading: str) -> list[tuple[str, str]]:
    """The fenced blocks of README's section ``heading`` (up to the next heading of level 4 or
    less): (language, text) each."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index(heading) + 1
    blocks: list[tuple[str, str]] = []
    fence: str | None = None
    body: list[str] = []
    for line in lines[start:]:
        if fence is None:
            if line.startswith("```"):
                fence, body = line[3:].strip(), []
            elif re.match(r"#{1,4} ", line):
                break
        elif line.startswith("```"):
            blocks.append((fence, "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    return blocks


def readme_files(*headings: str) -> dict[str, str]:
    """The files those sections show: each block whose first line is ``# <file name>``."""
    files = {}
    for heading in headings:
        for _, text in readme_section(heading):
            named = re.match(r"# (\S+\.(?:py|ini|toml))\n", text)
            if named:
                files[named.group(1)] = text
    return files


def readme_commands(heading: str) -> list[str]:
    """The ``$ `` lines of the section's console blocks."""
    return [line[2:] for language, text in readme_section(heading) if language == "console"
            for line in text.splitlines() if line.startswith("$ ")]


def user_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, **changed: str) -> None:
    """README's tasks.py, main.py, pytest.ini and test_app.py in pytester's directory, ``changed``
    files added or replaced; no TASKGATE_* setting inherited (the user has none)."""
    for name in [name for name in os.environ if name.startswith("TASKGATE_")]:
        monkeypatch.delenv(name)
    for name, text in {**readme_files(USE, TESTING), **changed}.items():
        (pytester.path / name).write_text(text)


def running_in(directory: Path) -> list[str]:
    """Processes whose working directory or command line names ``directory`` (what the plugin
    started there, if any)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd.startswith(str(directory)) or str(directory) in argv:
            found.append(f"{proc.name}: {argv}")
    return found


def test_readme_shows_the_files_and_commands() -> None:
    files = readme_files(USE, TESTING)
    assert set(files) == {"tasks.py", "main.py", "pytest.ini", "test_app.py"}
    assert "def test_sum(taskgate_worker)" in files["test_app.py"]
    assert "TestClient(app) as client" in files["test_app.py"]
    assert "@pytest.mark.anyio" in files["test_app.py"] and "submit_sync" in files["test_app.py"]
    assert readme_commands(TESTING)[-1] == ".venv/bin/pytest -q"


def test_readme_tests_pass_against_a_real_worker_and_stop_it(pytester: pytest.Pytester,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    user_project(pytester, monkeypatch)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    # Nothing the fixture started outlives the session.
    assert running_in(pytester.path) == []


def test_a_broken_expectation_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    test_app = readme_files(TESTING)["test_app.py"]
    assert 'assert response.json()["result"] == 3' in test_app
    user_project(pytester, monkeypatch,
                 **{"test_app.py": test_app.replace('["result"] == 3', '["result"] == 4')})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_sum*", "*assert 3 == 4*"])


HISTORY = '''
import time

import redis
from taskgate.records.workers import heartbeats
from tasks import add, countdown

def running(client):
    return sum(beat.active for beat in heartbeats(client).values())

def test_leaves_history(taskgate_worker):
    job = add.submit_sync(x=1, y=2)
    assert job.result(timeout=10) == 3
    countdown.submit_sync(seconds=30)                  # running at the test's end
    client = redis.Redis.from_url(taskgate_worker.redis_url)
    deadline = time.monotonic() + 20
    while not running(client):
        assert time.monotonic() < deadline, "the countdown did not start"
        time.sleep(0.05)
    assert client.exists("taskgate:index") and client.keys("taskgate:task:*")

def test_starts_empty(taskgate_worker):
    client = redis.Redis.from_url(taskgate_worker.redis_url)
    left = [key for key in client.keys("*") if not key.startswith((b"_kombu.binding.", b"taskgate:worker:",
            b"taskgate:catalogue", b"taskgate:layout", b"unacked_mutex"))]
    assert left == []
    assert running(client) == 0                         # the last test's countdown is not still running
    assert add.submit_sync(x=2, y=2).result(timeout=10) == 4   # the broker's bindings held
'''


def test_each_test_starts_with_an_empty_history(pytester: pytest.Pytester,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    user_project(pytester, monkeypatch, **{"test_history.py": HISTORY})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_history.py")
    result.assert_outcomes(passed=2)


UNUSED = '''
import os

def test_nothing_started():
    assert "TASKGATE_REDIS_URL" not in os.environ
'''


def test_a_session_without_the_fixture_starts_nothing(pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    user_project(pytester, monkeypatch, **{"test_app.py": UNUSED})
    # --strict-config: the ini option is the plugin's, not an unknown one.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-config", "-W", "error")
    result.assert_outcomes(passed=1)
    assert running_in(pytester.path) == []


def test_no_task_modules_is_an_error_saying_what_to_set(pytester: pytest.Pytester,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    user_project(pytester, monkeypatch, **{"pytest.ini": "[pytest]\n"})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "test_submit_sync")
    result.assert_outcomes(errors=1, deselected=2)
    result.stdout.fnmatch_lines(["*no task modules for its worker*taskgate_tasks = tasks*"])


def test_a_task_module_that_does_not_import_shows_the_workers_log(pytester: pytest.Pytester,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    user_project(pytester, monkeypatch, **{"pytest.ini": "[pytest]\ntaskgate_tasks = tasks nosuchmodule\n"})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "test_submit_sync")
    result.assert_outcomes(errors=1, deselected=2)
    result.stdout.fnmatch_lines(["*the worker (taskgate worker * --tasks=tasks,nosuchmodule, in *) exited with code 2*",
                                 "*cannot import the task modules*"])
    assert running_in(pytester.path) == []


@pytest.mark.timeout(300)
def test_readme_word_for_word_in_an_empty_directory(tmp_path: Path) -> None:
    """README's "Use it in your own FastAPI app" and "Testing your app", from an empty directory
    next to a copy of the repository, with the runtime dependencies only (`pip install`), then
    pytest and httpx2 as README says."""
    from .service.test_newcomer import fresh_copy

    if shutil.which("bash") is None or shutil.which("python3") is None:
        pytest.fail("README's commands need bash and python3 on PATH")
    fresh_copy(tmp_path / "taskgate")
    app = tmp_path / "app"
    app.mkdir()
    install = readme_commands(USE)[0]
    assert install == "python3 -m venv .venv && .venv/bin/pip install -q ../taskgate"
    for name, text in readme_files(USE, TESTING).items():
        (app / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKGATE_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    began = time.monotonic()
    out = []
    for command in [install, *readme_commands(TESTING)]:
        run = subprocess.run(["bash", "-c", command], cwd=app, env=env, capture_output=True, text=True,
                             timeout=240)
        out.append(f"$ {command}\n{run.stdout}{run.stderr}")
        assert run.returncode == 0, "\n".join(out)
    assert re.search(r"^3 passed in ", out[-1], re.MULTILINE), out[-1]
    # Runtime dependencies only: the repository's dev tools are not there.
    probe = subprocess.run([str(app / ".venv/bin/python"), "-c", "import mypy"], capture_output=True)
    assert probe.returncode != 0, "the install pulled the dev extras"
    assert running_in(app) == []
    print(f"README, word for word: {time.monotonic() - began:.0f} s (install included)")


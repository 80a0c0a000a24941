"""Fuzzing the live API from its own OpenAPI schema (schemathesis), with a real worker behind it:
no 5xx, and every response matches the schema it is documented with."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..helpers import children, start_api, start_worker, stop

#: Examples per operation: bounded so the suite stays fast.
EXAMPLES = 15


@pytest.fixture
def fuzz_api(own_redis_url: str, smtp_server: tuple[object, str], tmp_path: Path) -> Iterator[str]:
    """Its own API and worker on their own queue, with the built-in tasks and the README's example
    only (not the suite's file-writing test tasks): fuzzed sleeps and big prime counts must not
    hold the session worker, and the worker is killed at the end, whatever it still runs."""
    env = {"TASKGATE_DEFAULT_QUEUE": f"fuzz-{tmp_path.name}", "TASKGATE_TASK_MODULES": "myapp.tasks",
           "TASKGATE_SMTP_URL": smtp_server[1]}
    worker = start_worker(own_redis_url, tmp_path / "worker.log", **env)
    api, base = start_api(own_redis_url, tmp_path / "api.log", **env)
    yield base
    stop(api)
    for pid in [worker.pid, *children(worker.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.wait()


def test_api_never_5xx_and_matches_its_schema(fuzz_api: str) -> None:
    # imported here, not at the top: every pytest process of `make test` collects this file, and
    # schemathesis with hypothesis costs each a second or more of CPU to import
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import checks

    schema = schemathesis.openapi.from_url(f"{fuzz_api}/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in ("/tasks/{task_id}/events", "/events"):
            continue  # an endless stream for live tasks; covered by test_tasks

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, derandomize=True)  # the same examples on every run: CI stays stable
        def fuzz(case: schemathesis.Case) -> None:
            # positive_data_acceptance is left out on purpose: some rules cannot be said in the
            # schema (countdown and eta together, an eta without a timezone), and schemathesis
            # writes the int64 bounds through a float (-2**63 becomes -9223372036854776000,
            # which is below the bound and rightly refused).
            case.call_and_validate(timeout=40, excluded_checks=[checks.positive_data_acceptance])

        fuzz()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) >= 15, checked

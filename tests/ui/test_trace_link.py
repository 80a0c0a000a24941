"""A task's trace on its dashboard page (Playwright driving Debian's chromium): the trace id its
record keeps (``GET /tasks/{task_id}``'s ``trace_id``), linked through TASKGATE_TRACE_URL by an
API that has it, shown as plain text by one that has not, and still there as the page follows
the task to its end. The task is submitted traced from this process (an in-memory tracer
provider) and run by the session's worker. Screenshots go to the test run's artifacts folder."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskgate import Taskgate

from .. import otel
from ..helpers import start_api, stop, wait_for, with_gate
from .test_dashboard import browser as browser  # the fixture, shared
from .test_dashboard import page_of

TEMPLATE = "https://jaeger.example/trace/{trace_id}?uiEmbed=v0"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trace-screenshots")
    print(f"trace link screenshots: {folder}")
    return folder


def test_a_tasks_page_links_its_trace(redis_url: str, api_url: str, worker: subprocess.Popen[bytes],
                                      browser: Any, artifacts: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    started = tmp_path / "started"

    async def submit(tg: Taskgate) -> str:
        spec = tg.producer.spec("sleepy")
        submission = await tg.producer.submitter.submit(
            spec, spec.args_model(seconds=120, started_file=str(started)))
        return submission.task_id

    with otel.in_memory() as exporter, ThreadPoolExecutor(1) as thread:  # playwright's loop runs in this one
        task_id = thread.submit(with_gate, redis_url, submit, task_modules=["tests.sample_tasks"]).result(60)
        (span,) = exporter.get_finished_spans()
    trace_id = f"{span.context.trace_id:032x}"
    linked, base = start_api(redis_url, tmp_path / "api.log", TASKGATE_TRACE_URL=TEMPLATE)
    problems: list[str] = []
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get(f"/tasks/{task_id}").json()["trace_id"] == trace_id
            wait_for(started.exists, 60, "the task started on the session's worker")
            page = page_of(browser, problems)
            page.goto(f"{base}/ui/tasks/{task_id}")
            trace = page.locator("#task").get_by_role("link", name=trace_id)
            expect(trace).to_have_attribute("href", f"https://jaeger.example/trace/{trace_id}?uiEmbed=v0")
            expect(page.locator("#task .state")).to_have_text("started")
            page.screenshot(path=artifacts / "linked.png")
            assert http.post(f"/tasks/{task_id}/cancel").status_code == 200
            expect(page.locator("#task .state")).to_have_text("cancelled")  # redrawn from its events
            expect(trace).to_have_attribute("href", f"https://jaeger.example/trace/{trace_id}?uiEmbed=v0")

        plain = page_of(browser, problems)  # the session's API has no TASKGATE_TRACE_URL
        plain.goto(f"{api_url}/ui/tasks/{task_id}")
        expect(plain.locator("#trace")).to_have_text(trace_id)
        expect(plain.locator("#task").get_by_role("link", name=trace_id)).to_have_count(0)
        plain.screenshot(path=artifacts / "plain.png")
    finally:
        httpx.post(f"{api_url}/tasks/{task_id}/cancel", timeout=10)  # not left running on a failure
        stop(linked)
    assert problems == []

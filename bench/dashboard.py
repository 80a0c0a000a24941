"""Section 9 of ``make bench``: the dashboard's task list with 100,000 tasks in the history, at
the HTTP level: the page's own files, and the API call that fills its first page (and the same
call with a filter no task matches, which reads the most history to answer); then in Debian's
chromium (when installed), from navigation to the first page of rows on screen."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import redis

if TYPE_CHECKING:
    from bench.run import Report, Stack


def dashboard_section(stack: Stack, args: argparse.Namespace, report: Report) -> None:
    from bench.run import median, percentile

    #: Debian's chromium, which Playwright drives (it cannot download a browser here).
    chromium = Path("/usr/bin/chromium")

    tasks = 1_000 if args.quick else 100_000  # quick: still 20 pages of 50
    samples = 5 if args.quick else 50
    with httpx.Client(base_url=stack.api, timeout=120) as http:
        for start in range(0, tasks, 1000):  # no worker runs: they stay queued, in the history
            answer = http.post("/tasks/add/batch", json={"items": [{"x": i, "y": 1}
                                                                   for i in range(start, start + 1000)]})
            answer.raise_for_status()

        def timed(*paths: str) -> list[float]:
            out = []
            for _ in range(samples):
                began = time.perf_counter()
                for path in paths:
                    http.get(path).raise_for_status()
                out.append((time.perf_counter() - began) * 1000)
            return out

        rows = {
            "the page's files (`/ui/`, its five modules, `app.css`)": timed(
                "/ui/", *(f"/ui/static/{name}.js" for name in ("app", "core", "charts", "tasks", "pages")),
                "/ui/static/app.css"),
            "its first page of tasks (`GET /tasks?limit=50`)": timed("/tasks?limit=50"),
            "a filter no task matches (`GET /tasks?state=failed&limit=50`)": timed("/tasks?state=failed&limit=50"),
        }
    if chromium.exists():
        rows["in chromium: from navigation to 50 rows on screen (`/ui/`, summary strip and live feed "
             "included)"] = first_render(stack.api, str(chromium), samples)
    with redis.Redis.from_url(stack.url) as client:  # the queued tasks go: later sections start workers
        stack.reset_data(client)
    report.add(f"## 9. The dashboard's task list with {tasks:,} tasks in the history")
    report.add()
    report.add(f"What the task list loads, timed from a Python client on the same machine, {samples} times "
               "each, worker stopped (the tasks stay queued); then the whole page in headless chromium "
               "(Playwright), a fresh page each time, timed by the page's own clock from navigation "
               "until the first 50 rows are in the document: its files, the live feed opened and live, "
               "the first page fetched and drawn.")
    report.add()
    report.table(["request", "median", "p99"],
                 [[name, f"**{median(values):.1f} ms**", f"{percentile(values, 0.99):.1f} ms"]
                  for name, values in rows.items()])


#: Notes, on the page's own clock, when the task list first holds 50 rows (a script Playwright
#: adds to the page before its own run; the page's CSP does not apply to it).
RENDERED = """new MutationObserver((_, observer) => {
  if (document.querySelectorAll("tbody tr[data-task]").length >= 50) {
    window.taskgateRendered = performance.now();
    observer.disconnect();
  }
}).observe(document, { childList: true, subtree: true });"""


def first_render(api: str, executable: str, samples: int) -> list[float]:
    """Milliseconds from navigation to the task list's first 50 rows, in a fresh page each time."""
    from playwright.sync_api import sync_playwright

    out = []
    # chromium's profile goes under TMPDIR, and a long TMPDIR makes its socket path too long
    # for a Unix socket (it aborts): a short one for the browser
    short = tempfile.mkdtemp(prefix="tg-", dir="/tmp" if Path("/tmp").is_dir() else None)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"],
                                             env={**os.environ, "TMPDIR": short})
        try:
            for _ in range(samples):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.add_init_script(RENDERED)
                page.goto(f"{api}/ui/")
                page.locator("tbody tr[data-task]").nth(49).wait_for(state="attached", timeout=30_000)
                out.append(float(page.evaluate("window.taskgateRendered")))
                page.close()
        finally:
            browser.close()
            shutil.rmtree(short, ignore_errors=True)
    return out

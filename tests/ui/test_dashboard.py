"""The dashboard in a real browser (Playwright driving Debian's chromium) against a real API and
worker: tasks appear live, a task's page follows it, cancel and replay from the page, results
shown as text (never as HTML), login with a key, other owners' tasks invisible, logout ending
the session on the server. Screenshots go to the test run's artifacts folder (printed)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import httpx
import pytest

from ..api.test_auth import bearer, new_key
from ..api.test_docs import chromium

XSS = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"dashboard screenshots: {folder}")
    return folder


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    # What a page shows after a worker ran a task waits on that worker, which a busy CI machine
    # may keep waiting for seconds: expectations wait up to 20 s (they pass as soon as they hold).
    expect.set_options(timeout=20_000)

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def page_of(browser: Any, problems: list[str]) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    return page


def test_tasks_appear_live_and_their_page_shows_them_as_text(api_url: str, worker: subprocess.Popen[bytes],
                                                            browser: Any, artifacts: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    answer = page.goto(api_url + "/")  # the standalone API's front page is the dashboard
    assert page.url == api_url + "/ui/"
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    expect(page.locator("#live")).to_have_text("Live")
    with httpx.Client(base_url=api_url, timeout=10) as http:
        task_id = http.post("/tasks/counted", json={"log": str(tmp_path / "runs"), "token": XSS}).json()["task_id"]
    row = page.locator(f"tr[data-task='{task_id}']")
    expect(row).to_be_visible()  # appeared without a reload
    expect(row.locator(".state")).to_have_text("succeeded")
    page.screenshot(path=artifacts / "tasks.png")
    row.get_by_role("link").click()
    expect(page).to_have_url(f"{api_url}/ui/tasks/{task_id}")
    expect(page.locator("#task")).to_contain_text(f'"{XSS}"')  # the text itself: not run, not markup
    expect(page.get_by_role("list", name="Timeline").get_by_role("listitem")).to_have_count(3)
    expect(page.get_by_role("list", name="Timeline")).to_contain_text("started")
    assert page.locator("#task script").count() == 0
    page.screenshot(path=artifacts / "task.png")
    page.reload()  # a task's address can be shared
    expect(page.locator("#task")).to_contain_text("succeeded")
    assert problems == []


# Collects, in the page, every progress value the task's page shows (it redraws on each event).
PROGRESS = """() => {
  window.progressSeen = [];
  new MutationObserver(() => {
    const bar = document.querySelector("#task progress");
    if (bar) window.progressSeen.push(Number(bar.getAttribute("value")));
  }).observe(document.getElementById("main"), { childList: true, subtree: true });
}"""


def test_a_tasks_page_shows_its_progress_moving_then_its_result(api_url: str, worker: subprocess.Popen[bytes],
                                                                browser: Any) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    page.goto(f"{api_url}/ui/")
    page.evaluate(PROGRESS)
    with httpx.Client(base_url=api_url, timeout=10) as http:
        task_id = http.post("/tasks/count_primes", json={"limit": 200_000_000}).json()["task_id"]
    page.locator("#main").get_by_role("textbox", name="Find a task by id").fill(task_id)
    page.keyboard.press("Enter")
    expect(page.locator("#task .state")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#task")).to_contain_text("11078937")  # the primes below 200,000,000
    seen = page.evaluate("() => window.progressSeen")
    moving = sorted({value for value in seen if 0 < value < 100})
    assert len(moving) >= 2, f"progress did not move on the page: {seen}"
    assert seen[-1] == 100
    assert problems == []


def test_cancel_and_replay_from_the_page(api_url: str, worker: subprocess.Popen[bytes], browser: Any) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    with httpx.Client(base_url=api_url, timeout=10) as http:
        task_id = http.post("/tasks/add", params={"countdown": 600}, json={"x": 40, "y": 2}).json()["task_id"]
    page.goto(f"{api_url}/ui/tasks/{task_id}")
    expect(page.locator("#task .state")).to_have_text("queued")
    expect(page.get_by_role("button", name="Terminate")).to_be_enabled()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#task .state")).to_have_text("cancelled")
    for ended_only in ("Cancel", "Terminate"):  # nothing left to cancel
        expect(page.get_by_role("button", name=ended_only)).to_be_disabled()
    page.get_by_role("button", name="Replay").click()
    expect(page).not_to_have_url(f"{api_url}/ui/tasks/{task_id}")
    expect(page.locator("#task .state")).to_have_text("succeeded")  # followed live on its page
    expect(page.locator("#task")).to_contain_text("42")
    page.get_by_role("link", name=task_id).click()  # "Replays": back to the original
    expect(page).to_have_url(f"{api_url}/ui/tasks/{task_id}")
    assert problems == []


def test_a_tasks_page_says_cancel_was_asked_of_a_task_that_ran_on(api_url: str, worker: subprocess.Popen[bytes],
                                                                  browser: Any, artifacts: Path,
                                                                  tmp_path: Path) -> None:
    """Cancel on the page of a running sync task that never checks: the page says when cancel
    was asked and that the task stops when it checks; once the task has run to its end
    (``succeeded``, once: it logs its own start and end), that it did not check."""
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    log = tmp_path / "runs.log"
    with httpx.Client(base_url=api_url, timeout=10) as http:
        task_id = http.post("/tasks/counted", json={"log": str(log), "token": "on", "seconds": 4}).json()["task_id"]
    page.goto(f"{api_url}/ui/tasks/{task_id}")
    expect(page.locator("#task .state")).to_have_text("started")
    expect(page.locator("#cancel-asked")).to_have_count(0)
    page.get_by_role("button", name="Cancel").click()
    asked = page.locator("#cancel-asked")
    expect(asked).to_contain_text("it stops when it next checks")
    expect(page.locator("#task .state")).to_have_text("succeeded")  # followed live: it ran on
    expect(asked).to_contain_text("it did not check for cancel and ran to its end")
    expect(asked.locator("time")).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
    page.screenshot(path=artifacts / "task-cancel-asked.png")
    assert [line.split()[0] for line in log.read_text().splitlines()] == ["start", "end"]
    assert problems == []


def test_login_shows_only_the_owners_tasks_and_logout_ends_the_session(
        secured: str, redis_url: str, worker: subprocess.Popen[bytes], browser: Any, artifacts: Path) -> None:
    from playwright.sync_api import expect

    alice, bob = new_key(redis_url, "alice-ui"), new_key(redis_url, "bob-ui")
    with httpx.Client(base_url=secured, timeout=10) as http:
        bobs = http.post("/tasks/add", json={"x": 1, "y": 1}, headers=bearer(bob)).json()["task_id"]
        alices = http.post("/tasks/add", json={"x": 2, "y": 2}, headers=bearer(alice)).json()["task_id"]
    problems: list[str] = []
    page = page_of(browser, problems)
    page.goto(secured + "/ui/")
    key = page.get_by_label("API key")
    key.fill("tg_not_a_key")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That key is invalid or revoked.")
    key.fill(alice)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#who")).to_have_text("alice-ui")
    expect(page.locator(f"tr[data-task='{alices}']")).to_be_visible()
    assert page.locator(f"tr[data-task='{bobs}']").count() == 0
    page.goto(f"{secured}/ui/tasks/{bobs}")  # another owner's task: unknown
    expect(page.locator("main .error")).to_contain_text("no task with id")
    page.screenshot(path=artifacts / "login-scoped.png")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "taskgate_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0, "the key is not kept"
    forged = page.evaluate(f"""async () => (await fetch("/tasks/{alices}/replay", {{method: "POST"}})).status""")
    assert forged == 403, "a change without the CSRF token is refused"
    page.goto(secured + "/ui/")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    stale = httpx.get(f"{secured}/tasks/{alices}", cookies={"taskgate_session": cookie["value"]}, timeout=10)
    assert stale.status_code == 401, "logout ended the session on the server"
    # the refusals above (401, 403, and 404 for bob's task) are logged by the browser, nothing else
    assert [p for p in problems if not any(code in p for code in ("401", "403", "404"))] == []


def test_a_dead_letter_requeued_from_the_page_runs(api_url: str, worker: subprocess.Popen[bytes], browser: Any,
                                                    artifacts: Path, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from ..helpers import wait_for, wait_result

    counter = tmp_path / "n"
    with httpx.Client(base_url=api_url, timeout=10) as http:
        # fails its 4 attempts (1 + 3 retries), then succeeds on the 5th: the requeued one
        task_id = http.post("/tasks/flaky", json={"counter": str(counter), "failures": 4}).json()["task_id"]
        wait_for(lambda: http.get(f"/tasks/{task_id}").json()["state"] == "failed", 60, "the task to die")
        problems: list[str] = []
        page = page_of(browser, problems)
        page.goto(api_url + "/ui/")
        page.get_by_role("link", name="Dead letters").click()
        row = page.locator(f"tr[data-task='{task_id}']")
        expect(row).to_contain_text("max_retries")
        page.screenshot(path=artifacts / "dead-letters.png")
        row.get_by_role("checkbox").check()
        page.get_by_role("button", name="Requeue selected").click()
        expect(page.locator("#message")).to_have_text("Requeue: 1 done")
        expect(row).to_have_count(0)
        assert wait_result(http, task_id) == {"status": "completed", "result": 5}
    assert problems == []


def test_schedules_paused_resumed_and_run_from_the_page(api_url: str, worker: subprocess.Popen[bytes],
                                                        browser: Any, artifacts: Path) -> None:
    from playwright.sync_api import expect

    with httpx.Client(base_url=api_url, timeout=10) as http:
        schedule_id = http.post("/schedules", json={"task": "add", "arguments": {"x": 3, "y": 4}, "every": 3600,
                                                    "name": "hourly sum"}).json()["schedule_id"]
        try:
            problems: list[str] = []
            page = page_of(browser, problems)
            page.goto(api_url + "/ui/schedules")
            row = page.locator(f"tr[data-schedule='{schedule_id}']")
            expect(row).to_contain_text("hourly sum")
            expect(row.locator(".state")).to_have_text("active")
            row.get_by_role("button", name="Pause").click()
            expect(row.locator(".state")).to_have_text("paused")
            assert http.get(f"/schedules/{schedule_id}").json()["enabled"] is False
            row.get_by_role("button", name="Resume").click()
            expect(row.locator(".state")).to_have_text("active")
            row.get_by_role("button", name="Run now").click()
            page.screenshot(path=artifacts / "schedules.png")
            page.locator("#message").get_by_role("link").click()
            expect(page.locator("#task")).to_contain_text("succeeded")
            expect(page.locator("#task")).to_contain_text(schedule_id)
            page.locator("#task").get_by_role("link", name="its runs").click()  # back to the list, filtered
            expect(page).to_have_url(re.compile(f"schedule_id={schedule_id}"))
            expect(page.locator("tbody tr[data-task]")).to_have_count(1)
            assert problems == []
        finally:
            http.delete(f"/schedules/{schedule_id}")


def test_the_task_list_pages_to_older_tasks(api_url: str, worker: subprocess.Popen[bytes], browser: Any) -> None:
    from playwright.sync_api import expect

    with httpx.Client(base_url=api_url, timeout=30) as http:
        made = http.post("/tasks/owner_header/batch", json={"items": [{}] * 55}).json()["tasks"]
    assert len(made) == 55
    problems: list[str] = []
    page = page_of(browser, problems)
    page.goto(api_url + "/ui/?name=owner_header")
    rows = page.locator("tbody tr[data-task]")
    expect(rows).to_have_count(50)
    first = set(rows.evaluate_all("rows => rows.map(row => row.dataset.task)"))
    page.get_by_role("link", name="Older").click()
    expect(page).to_have_url(re.compile(r"cursor="))
    expect(page.get_by_role("link", name="Newest")).to_be_visible()
    expect(rows.first).to_be_visible()
    older = set(rows.evaluate_all("rows => rows.map(row => row.dataset.task)"))
    assert older and not first & older
    assert problems == []


def test_list_filters_and_bulk_actions_from_the_keyboard(api_url: str, worker: subprocess.Popen[bytes],
                                                         browser: Any, artifacts: Path) -> None:
    from playwright.sync_api import expect

    name = "add"
    with httpx.Client(base_url=api_url, timeout=10) as http:
        waiting = [http.post("/tasks/add", params={"countdown": 600}, json={"x": n, "y": 0}).json()["task_id"]
                   for n in range(3)]
        schedule_id = http.post("/schedules", json={"task": "add", "arguments": {"x": 1, "y": 1},
                                                    "every": 3600}).json()["schedule_id"]
        runs = [http.post(f"/schedules/{schedule_id}/run").json()["task_id"] for _ in range(2)]
        created = [http.get(f"/tasks/{task_id}").json()["created_at"] for task_id in waiting]
    problems: list[str] = []
    browser_context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id="Asia/Tokyo")
    page = browser_context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.goto(api_url + "/ui/")
    # Filters, typed: state and task name, then the time range (in the viewer's zone, Tokyo).
    page.get_by_label("State").select_option("queued")
    page.get_by_label("Task", exact=True).fill(name)
    page.get_by_label("Task", exact=True).press("Enter")
    expect(page).to_have_url(re.compile(r"state=queued&name=add"))
    for task_id in waiting:
        expect(page.locator(f"tr[data-task='{task_id}']")).to_be_visible()
    first = datetime.fromisoformat(created[0]).astimezone(ZoneInfo("Asia/Tokyo"))
    page.get_by_label("Submitted from").fill(first.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_label("Submitted from").press("Enter")
    expect(page).to_have_url(re.compile(r"since=\d{4}-\d\d-\d\dT\d\d%3A\d\d%3A00.000Z"))
    since = datetime.fromisoformat(parse_qs(urlparse(page.url).query)["since"][0])
    assert since == first.replace(second=0, microsecond=0), "the local time, sent as UTC"
    for task_id in waiting:
        expect(page.locator(f"tr[data-task='{task_id}']")).to_be_visible()
    cell = page.locator(f"tr[data-task='{waiting[0]}'] time")
    utc = datetime.fromisoformat(created[0])
    title = utc.strftime("%Y-%m-%dT%H:%M:%S") + (f".{utc.microsecond // 1000:03d}" if utc.microsecond >= 1000 else "")
    expect(cell).to_have_attribute("title", f"{title}Z (UTC)")  # UTC on hover, the viewer's time shown
    expect(cell).to_contain_text(first.strftime("%-I:%M:%S"))
    # Bulk: select two with the keyboard (Space on a focused checkbox), cancel them.
    for task_id in waiting[:2]:
        page.get_by_label(f"Select {task_id}").focus()
        page.keyboard.press("Space")
    page.get_by_role("button", name="Cancel selected").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_have_text("Cancel: 2 done")
    for task_id in waiting[:2]:  # they left the "queued" filter, live
        expect(page.locator(f"tr[data-task='{task_id}']")).to_have_count(0)
    expect(page.locator(f"tr[data-task='{waiting[2]}']")).to_be_visible()
    # Replay all shown (the one still queued): a new task; the selection then clears.
    page.get_by_label("Select all shown").check()
    page.get_by_role("button", name="Replay selected").click()
    expect(page.locator("#message")).to_have_text(re.compile(r"^Replay: \d+ done"))
    page.screenshot(path=artifacts / "tasks-filtered.png")
    # The schedule filter: its runs only.
    page.goto(f"{api_url}/ui/?schedule_id={schedule_id}")
    expect(page.locator("tbody tr[data-task]")).to_have_count(2)
    assert set(page.locator("tbody tr[data-task]").evaluate_all("rows => rows.map(row => row.dataset.task)")) == set(runs)
    with httpx.Client(base_url=api_url, timeout=10) as http:
        http.delete(f"/schedules/{schedule_id}")
        for task_id in waiting:
            http.post(f"/tasks/{task_id}/cancel")
        for replayed in http.get("/tasks", params={"state": "queued", "name": "add", "limit": 100}).json()["tasks"]:
            if replayed.get("replay_of") in waiting:
                http.post(f"/tasks/{replayed['task_id']}/cancel")
    assert problems == []
    browser_context.close()


def test_the_queues_page_shows_depth_and_live_workers(api_url: str, worker: subprocess.Popen[bytes],
                                                      browser: Any, artifacts: Path) -> None:
    from playwright.sync_api import expect

    with httpx.Client(base_url=api_url, timeout=10) as http:
        queues = {queue["name"]: queue for queue in http.get("/queues").json()}
        workers = http.get("/workers").json()
        later = http.post("/tasks/add", params={"countdown": 600}, json={"x": 1, "y": 1}).json()["task_id"]
    problems: list[str] = []
    page = page_of(browser, problems)
    page.goto(api_url + "/ui/")
    strip = page.get_by_role("region", name="Summary")
    expect(strip).to_contain_text("running")  # the summary strip above the task list
    expect(strip.get_by_role("img")).to_have_attribute("aria-label", re.compile(r"^Tasks ended per minute"))
    page.get_by_role("link", name="Queues").click()
    (name, queue), *_ = [(name, queue) for name, queue in queues.items() if queue["workers"]]
    row = page.locator(f"tr[data-queue='{name}']")
    expect(row).to_contain_text(queue["workers"][0])  # the session's worker, live
    worker_row = page.locator(f"tr[data-worker='{workers[0]['name']}']")
    expect(worker_row.locator("td").nth(2)).to_have_text(str(workers[0]["concurrency"]))
    expect(worker_row.locator("td").nth(5)).to_have_text(re.compile(r"^\d+ s ago$"))
    expect(page.get_by_role("region", name="Summary").locator(".tile").first).not_to_have_text("—")
    expect(page.get_by_role("region", name="Summary").get_by_role("img")).to_have_count(2)
    with httpx.Client(base_url=api_url, timeout=10) as http:
        assert http.post(f"/tasks/{later}/cancel").status_code == 200
    page.screenshot(path=artifacts / "queues.png")
    assert problems == []


def test_a_run_waiting_for_its_limit_says_so_and_the_queues_page_shows_the_limits_and_expiry(
        api_url: str, worker: subprocess.Popen[bytes], browser: Any, artifacts: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    ids: list[str] = []
    with httpx.Client(base_url=api_url, timeout=10) as http:
        assert http.put("/limits/sleepy", json={"concurrency": 1}).status_code == 200
        try:
            ids += [http.post("/tasks/sleepy", json={"seconds": 60}).json()["task_id"],
                    http.post("/tasks/sleepy", json={"seconds": 0}).json()["task_id"]]
            page = page_of(browser, problems)
            page.goto(f"{api_url}/ui/tasks/{ids[1]}")
            note = page.locator(".waiting")
            expect(note).to_have_text("waiting: slot")
            expect(note).to_have_attribute("title", re.compile("a free concurrency slot"))
            page.goto(f"{api_url}/ui/?name=sleepy")
            expect(page.locator(f"tr[data-task='{ids[1]}']")).to_contain_text("waiting: slot")
            expect(page.locator(f"tr[data-task='{ids[0]}'] .waiting")).to_have_count(0)
            page.get_by_role("link", name="Queues").click()
            row = page.get_by_role("table", name="Limits").locator("tr[data-limits='sleepy'] td")
            expect(row).to_have_text(["sleepy", "—", "1", "override", "1", "1", "1", "—"])
            page.screenshot(path=artifacts / "limits.png")
            # A run that waits past its expiry ends `expired`, its page saying so and when.
            ids.append(http.post("/tasks/sleepy", params={"expires": 1}, json={"seconds": 0}).json()["task_id"])
            page.goto(f"{api_url}/ui/tasks/{ids[2]}")
            expect(page.locator("#task .state")).to_have_text("expired")
            expect(page.locator("#task .state")).to_have_class(re.compile(r"\bstate-expired\b"))
            expect(page.locator("#task")).to_contain_text("Expires")
            expect(page.locator("#task")).to_contain_text("it will never run")
            page.goto(f"{api_url}/ui/?state=expired&name=sleepy")
            expect(page.locator(f"tr[data-task='{ids[2]}'] .state")).to_have_text("expired")
            expect(page.locator(f"tr[data-task='{ids[1]}']")).to_have_count(0)
            page.screenshot(path=artifacts / "expired.png")
        finally:
            for task_id in ids:
                http.post(f"/tasks/{task_id}/cancel")
            http.delete("/limits/sleepy")
    assert problems == []


def test_the_submit_form_shows_the_error_next_to_its_field(api_url: str, worker: subprocess.Popen[bytes],
                                                           browser: Any, artifacts: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    page.goto(api_url + "/ui/")
    page.get_by_role("link", name="Submit").click()
    page.get_by_role("navigation", name="Tasks").get_by_role("link", name="add", exact=True).click()
    page.get_by_label("X *").fill("forty")
    page.get_by_label("Y *").fill("2")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("#field-x-error")).to_contain_text("valid integer")
    expect(page.locator("#field-y-error")).to_have_text("")
    page.screenshot(path=artifacts / "submit.png")
    page.get_by_label("X *").fill("40")
    page.get_by_role("button", name="Submit").click()
    expect(page).to_have_url(re.compile(r"/ui/tasks/[0-9a-f-]{36}$"))
    expect(page.locator("#task .state")).to_have_text("succeeded")
    expect(page.locator("#task")).to_contain_text("42")
    assert [p for p in problems if "422" not in p] == []


# Counts, in the page, the DOM updates of the task list (one MutationObserver callback per update,
# however many rows it changed) and the gaps between animation frames.
MEASURE = """() => {
  window.measured = { updates: [], frames: [], rows: 0 };
  const body = document.querySelector("tbody");
  new MutationObserver(() => {
    window.measured.updates.push(performance.now());
    window.measured.rows = Math.max(window.measured.rows, body.children.length);
  }).observe(body, { childList: true, subtree: true });
  let last = performance.now();
  const frame = (now) => { window.measured.frames.push(now - last); last = now; requestAnimationFrame(frame); };
  requestAnimationFrame(frame);
}"""


@pytest.mark.alone  # its load must reach 500 changes a second: beside the parallel run it did not
def test_the_live_list_batches_500_changes_a_second(api_url: str, worker: subprocess.Popen[bytes],
                                                    browser: Any) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    page.goto(api_url + "/ui/")
    expect(page.locator("#live")).to_have_text("Live")
    page.evaluate(MEASURE)
    made: list[str] = []
    seconds, per_step, step = 4.0, 25, 0.05  # 25 new tasks every 50 ms: 500 changes a second
    with httpx.Client(base_url=api_url, timeout=10) as http:
        began = time.monotonic()
        for i in range(int(seconds / step)):
            answer = http.post("/tasks/owner_header/batch", params={"countdown": 3600},
                               json={"items": [{}] * per_step})
            made += [task["task_id"] for task in answer.json()["tasks"]]
            pause = began + (i + 1) * step - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the load, not waiting for the page
        took = time.monotonic() - began
        newest = page.locator(f"tr[data-task='{made[-1]}']")
        expect(newest).to_be_visible()  # the last one arrives, at the top
        assert page.locator("tbody tr").first.get_attribute("data-task") in made[-per_step:], "newest on top"
        measured = page.evaluate("() => window.measured")
        for chunk in range(0, len(made), 1000):  # cancelled: they leave the delayed set
            http.post("/tasks/cancel", json={"task_ids": made[chunk:chunk + 1000]})
    rate = len(made) / took
    window = (measured["updates"][-1] - measured["updates"][0]) / 1000 if len(measured["updates"]) > 1 else 0
    frames = sorted(measured["frames"])
    print(f"{len(made)} changes at {rate:.0f}/s: {len(measured['updates'])} DOM updates in {window:.1f} s; "
          f"frames: median {frames[len(frames) // 2]:.1f} ms, longest {frames[-1]:.1f} ms; "
          f"at most {measured['rows']} rows")
    assert rate >= 250, f"the load was not generated ({rate:.0f} changes/s)"
    # one update per feed batch (at most 4 a second), not one per change
    assert len(measured["updates"]) <= 5 * (window + 1), measured["updates"]
    assert measured["rows"] <= 200, "the live list stays bounded"
    assert problems == []


def test_every_page_fits_a_phone_and_is_reached_by_keyboard(api_url: str, worker: subprocess.Popen[bytes],
                                                            browser: Any, artifacts: Path) -> None:
    from playwright.sync_api import expect

    with httpx.Client(base_url=api_url, timeout=10) as http:
        task_id = http.post("/tasks/add", json={"x": 2, "y": 3}).json()["task_id"]
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    for path, ready in [("", "#live"), (f"tasks/{task_id}", "#task"), ("dead-letters", "table"),
                        ("schedules", "table"), ("queues", "table"), ("submit/add", "form.submit")]:
        page.goto(f"{api_url}/ui/{path}")
        expect(page.locator(ready).first).to_be_visible()
        width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"/ui/{path} scrolls sideways on a phone: {width}"
        expect(page.get_by_role("navigation", name="Pages").get_by_role("link", name="Submit")).to_be_in_viewport()
    page.goto(f"{api_url}/ui/")
    expect(page.locator("#live")).to_have_text("Live")
    page.screenshot(path=artifacts / "phone.png")
    context.close()

    # The keyboard alone: a page opens with the focus on its content; back to the pages' links,
    # then a task's form, its submit and its actions by Enter.
    page = page_of(browser, problems)
    page.goto(f"{api_url}/ui/")
    expect(page.locator("#live")).to_have_text("Live")
    expect(page.locator("#main")).to_be_focused()

    def tab_to(locator: Any, key: str = "Tab") -> None:
        for _ in range(100):  # the submit page has a link per task of the catalogue (34 in the tests)
            page.keyboard.press(key)
            if locator.evaluate("node => node === document.activeElement"):
                return
        raise AssertionError(f"{key} never reached {locator}")

    tab_to(page.get_by_role("link", name="Skip to content"), "Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    tab_to(page.get_by_role("navigation", name="Pages").get_by_role("link", name="Submit"), "Shift+Tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{api_url}/ui/submit")
    tab_to(page.get_by_role("main").get_by_role("link", name="add", exact=True))
    page.keyboard.press("Enter")
    tab_to(page.get_by_label("x *"))
    page.keyboard.type("20")
    page.keyboard.press("Tab")
    page.keyboard.type("22")
    page.keyboard.press("Enter")  # submits the form
    expect(page.locator("#task .state")).to_have_text("succeeded")
    expect(page.locator("#task")).to_contain_text("42")
    tab_to(page.get_by_role("button", name="Replay"))
    page.keyboard.press("Enter")
    expect(page.locator("#task")).to_contain_text("Replays")
    assert problems == []

"""The dashboard's webhook pages in a real browser (Playwright driving Debian's chromium) against
a real API and worker of their own and a local receiver (``tests/worker/receiver.py``): a
subscription made on the page shows its secret once, and deliveries are signed with it; a run's
end shows as a delivered delivery on the subscription's page while it is open; a receiver
answering 500 shows failed attempts, and Retry on the page delivers once it is fixed; a URL the
API refuses shows its 422 message on the form; values with HTML show as text.

The module's Valkey, API and worker run with TASKGATE_WEBHOOK_ALLOW_HTTP and
TASKGATE_WEBHOOK_ALLOW_PRIVATE (the receiver is http://127.0.0.1) and a short retry schedule; the
session's worker is not used: its deliverer, with the guards on, would refuse the receiver.
Screenshots go to the test run's artifacts folder (printed)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from ..api.test_auth import bearer, new_key
from ..helpers import Stack, start_api, stop, submit, wait, wait_for
from ..worker.receiver import Receiver, receiving
from .test_dashboard import XSS, page_of
from .test_dashboard import browser as browser  # the fixture, shared

#: Both guards off (a receiver on loopback over http) and short retry delays (s).
OPEN = {"TASKGATE_WEBHOOK_ALLOW_HTTP": "1", "TASKGATE_WEBHOOK_ALLOW_PRIVATE": "1",
        "TASKGATE_WEBHOOK_SCHEDULE": "0.3,0.3,0.3"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("webhook-screenshots")
    print(f"webhook page screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A private Valkey, a worker and an API, all with the guards off."""
    built = Stack(tmp_path_factory.mktemp("webhook-stack"), env=dict(OPEN))
    try:
        built.start_valkey()
        built.start_worker()
        built.start_api()
        yield built
    finally:
        built.close()


@pytest.fixture
def http(opened: Stack) -> Iterator[httpx.Client]:
    """A client of the module's API; the subscriptions a test made are deleted after it."""
    with httpx.Client(base_url=opened.base, timeout=10) as client:
        yield client
        for made in client.get("/webhooks").json()["webhooks"]:
            client.delete(f"/webhooks/{made['id']}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as listening:
        yield listening


def subscribe(http: httpx.Client, url: str, **fields: Any) -> dict[str, Any]:
    made = http.post("/webhooks", json={"url": url, "events": ["task.*"], **fields})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def test_a_subscription_made_on_the_page_shows_its_secret_once(
        opened: Stack, browser: Any, http: httpx.Client, receiver: Receiver, artifacts: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    page.goto(f"{opened.base}/ui/")
    page.get_by_role("navigation", name="Pages").get_by_role("link", name="Webhooks").click()
    expect(page).to_have_url(f"{opened.base}/ui/webhooks")
    expect(page.get_by_role("table", name="Webhooks")).to_contain_text("No webhooks yet")
    form = page.get_by_role("form", name="Add a webhook")
    form.get_by_label("URL").fill(receiver.url("/made"))
    form.get_by_role("checkbox", name="task.failed").uncheck()
    form.get_by_role("checkbox", name="task.succeeded").check()
    form.get_by_label("Only runs of these tasks").fill("add")
    form.get_by_label("Description").fill("billing")
    form.get_by_role("button", name="Add webhook").click()

    shown = page.get_by_role("region", name="New secret")
    expect(shown).to_contain_text("Copy it now: this secret is shown only once.")
    expect(page.locator("#secret")).to_have_value(re.compile("^whsec_"))
    secret = page.locator("#secret").input_value()
    row = page.locator("tr[data-webhook]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(receiver.url("/made"))
    expect(row).to_contain_text("billing")
    expect(row).to_contain_text("task.succeeded")
    expect(row).to_contain_text("add")
    expect(row.locator(".state")).to_have_text("enabled")
    expect(form.get_by_label("URL")).to_have_value("")  # the form is ready for another
    page.screenshot(path=artifacts / "webhook-created.png")

    # the secret shown is the one deliveries are signed with
    task_id = submit(http, "add", {"x": 2, "y": 5})
    assert wait(http, task_id)["state"] == "succeeded"
    wait_for(lambda: len(receiver.at("/made")) == 1, 30, "the run's end delivered")
    (request,) = receiver.at("/made")
    assert Webhook(secret).verify(request.body, request.headers)["type"] == "task.succeeded"

    page.get_by_role("button", name="I have copied it").click()
    expect(shown).to_have_count(0)
    page.reload()
    expect(row).to_have_count(1)
    assert secret not in page.content()
    webhook_id = row.get_attribute("data-webhook")
    assert "secret" not in http.get(f"/webhooks/{webhook_id}").json()
    assert problems == []


def test_a_runs_end_shows_as_delivered_on_the_subscriptions_page(
        opened: Stack, browser: Any, http: httpx.Client, receiver: Receiver, artifacts: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    made = subscribe(http, receiver.url("/ends"), description="ends")
    page.goto(f"{opened.base}/ui/webhooks")
    page.locator(f"tr[data-webhook='{made['id']}']").get_by_role("link", name=made["url"]).click()
    expect(page).to_have_url(f"{opened.base}/ui/webhooks/{made['id']}")
    expect(page.locator("#webhook")).to_contain_text("ends")
    expect(page.get_by_role("table", name="Deliveries, newest first")).to_contain_text("No deliveries yet")

    task_id = submit(http, "add", {"x": 1, "y": 1})  # while the page is open
    row = page.locator("tr[data-delivery]").filter(has_text=f"msg_{task_id}_succeeded")
    expect(row.locator(".state")).to_have_text("delivered")
    expect(row).to_contain_text("task.succeeded")
    expect(row.locator("td").nth(3)).to_have_text("1")  # attempts
    expect(row.locator("td").nth(5)).to_have_text("200")  # last response
    expect(row.get_by_role("button", name="Retry")).to_have_count(0)
    page.screenshot(path=artifacts / "webhook-delivered.png")
    row.get_by_role("link", name=f"msg_{task_id}_succeeded").click()  # to the run
    expect(page).to_have_url(f"{opened.base}/ui/tasks/{task_id}")
    page.go_back()

    page.get_by_role("button", name="Send test event").click()
    expect(page.locator("#message")).to_contain_text("Test event queued")
    test = page.locator("tr[data-delivery]").filter(has_text="webhook.test")
    expect(test.locator(".state")).to_have_text("delivered")

    page.get_by_role("button", name="Rotate secret").click()
    expect(page.get_by_role("region", name="New secret")).to_contain_text("Copy it now")
    expect(page.get_by_role("region", name="New secret")).to_contain_text("previous secret too until")
    assert page.locator("#secret").input_value() not in ("", made["secret"])

    page.get_by_role("button", name="Disable").click()
    expect(page.locator("#webhook .state")).to_have_text("disabled")
    assert http.get(f"/webhooks/{made['id']}").json()["enabled"] is False
    page.get_by_role("button", name="Enable").click()
    expect(page.locator("#webhook .state")).to_have_text("enabled")

    page.get_by_role("button", name="Delete").click()  # asks first
    page.get_by_role("button", name="Keep it").click()
    assert http.get(f"/webhooks/{made['id']}").status_code == 200
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("button", name="Yes, delete").click()
    expect(page).to_have_url(f"{opened.base}/ui/webhooks")
    expect(page.locator(f"tr[data-webhook='{made['id']}']")).to_have_count(0)
    assert http.get(f"/webhooks/{made['id']}").status_code == 404
    assert problems == []


def test_failed_attempts_show_and_a_retry_from_the_page_delivers(
        opened: Stack, browser: Any, http: httpx.Client, receiver: Receiver, artifacts: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    made = subscribe(http, receiver.plan("/flaky", 500), events=["task.failed"])
    task_id = submit(http, "boom", {"message": "to report"})
    page.goto(f"{opened.base}/ui/webhooks/{made['id']}")
    row = page.locator("tr[data-delivery]").filter(has_text=f"msg_{task_id}_failed")
    expect(row.locator(".state")).to_have_text("failed")  # the schedule spent: 1 + 3 attempts
    expect(row.locator("td").nth(3)).to_have_text("4")
    expect(row.locator("td").nth(5)).to_have_text("500")
    expect(row.locator("td").nth(7)).not_to_be_empty()  # its last error
    expect(page.locator("#webhook time")).to_have_count(2)  # created, failing since
    page.screenshot(path=artifacts / "webhook-failed.png")
    page.get_by_role("link", name="← All webhooks").click()
    listed = page.locator(f"tr[data-webhook='{made['id']}']")
    expect(listed.locator("time")).to_have_count(1)  # failing since
    listed.get_by_role("link", name=made["url"]).click()

    receiver.plan("/flaky", 200)  # fixed
    row.get_by_role("button", name="Retry").click()
    expect(row.locator(".state")).to_have_text("delivered")
    expect(row.locator("td").nth(5)).to_have_text("200")
    expect(row.get_by_role("button", name="Retry")).to_have_count(0)
    assert [request.headers["webhook-id"] for request in receiver.at("/flaky")] == [f"msg_{task_id}_failed"] * 5
    page.screenshot(path=artifacts / "webhook-retried.png")
    assert problems == []


def test_a_url_the_api_refuses_shows_its_422_on_the_form(opened: Stack, browser: Any, http: httpx.Client) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    page.goto(f"{opened.base}/ui/webhooks")
    form = page.get_by_role("form", name="Add a webhook")
    form.get_by_label("URL").fill("https://user:password@example.com/hook")
    form.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#webhook-url-error")).to_have_text(
        "url: put no credentials in it (they would be stored and shown); receivers verify each "
        "delivery's webhook-signature instead")
    expect(page.get_by_role("region", name="New secret")).to_have_count(0)
    form.get_by_label("URL").fill("https://example.com/hook")
    form.get_by_role("checkbox", name="task.failed").uncheck()  # no event at all
    form.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#webhook-url-error")).to_have_text("")
    expect(page.locator("#webhook-events-error")).not_to_be_empty()
    assert http.get("/webhooks").json()["webhooks"] == []
    assert [problem for problem in problems if "422" not in problem] == []


def test_values_with_html_show_as_text(opened: Stack, browser: Any, http: httpx.Client, receiver: Receiver,
                                       artifacts: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    image = '<img src=x onerror="document.title=1">'
    made = subscribe(http, receiver.url("/") + "?q=<b>bold</b>", description=f"{XSS} {image}", tasks=[XSS, "add"])
    page.goto(f"{opened.base}/ui/webhooks")
    row = page.locator(f"tr[data-webhook='{made['id']}']")
    expect(row).to_contain_text(f"{XSS} {image}")
    expect(row).to_contain_text(f"{XSS}, add")
    expect(row).to_contain_text("?q=<b>bold</b>")
    page.screenshot(path=artifacts / "webhook-html.png")
    row.get_by_role("link").click()
    expect(page.locator("#webhook")).to_contain_text(f"{XSS} {image}")
    expect(page.locator("#webhook")).to_contain_text("?q=<b>bold</b>")
    for tag in ("script", "img", "b"):
        assert page.locator(f"#main {tag}").count() == 0, tag
    assert problems == []


def test_the_pages_fit_a_phone_and_work_from_the_keyboard(opened: Stack, browser: Any, http: httpx.Client,
                                                          receiver: Receiver, artifacts: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    made = subscribe(http, receiver.url("/phone"), description="a phone's view")
    assert http.post(f"/webhooks/{made['id']}/test").status_code == 202
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    for path, ready in [("webhooks", "form.submit"), (f"webhooks/{made['id']}", "tr[data-state=delivered]")]:
        page.goto(f"{opened.base}/ui/{path}")
        expect(page.locator(ready).first).to_be_visible()
        width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"/ui/{path} scrolls sideways on a phone: {width}"
        expect(page.get_by_role("navigation", name="Pages").get_by_role("link", name="Submit")).to_be_in_viewport()
        page.screenshot(path=artifacts / f"phone-{path.replace('/', '-')}.png", full_page=True)
    context.close()

    # The keyboard alone: to the page by its link, the form filled and sent by Enter, the
    # secret focused to copy, disabled, delete asked and confirmed.
    page = page_of(browser, problems)
    page.goto(f"{opened.base}/ui/")
    expect(page.locator("#main")).to_be_focused()

    def tab_to(locator: Any, key: str = "Tab") -> None:
        for _ in range(60):
            page.keyboard.press(key)
            if locator.evaluate("node => node === document.activeElement"):
                return
        raise AssertionError(f"{key} never reached {locator}")

    tab_to(page.get_by_role("navigation", name="Pages").get_by_role("link", name="Webhooks"), "Shift+Tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{opened.base}/ui/webhooks")
    form = page.get_by_role("form", name="Add a webhook")
    tab_to(form.get_by_label("URL"))
    page.keyboard.type(receiver.url("/keys"))
    tab_to(form.get_by_role("checkbox", name="task.*"))
    page.keyboard.press("Space")
    tab_to(form.get_by_label("Description"))
    page.keyboard.type("typed")
    page.keyboard.press("Enter")  # submits the form
    expect(page.locator("#secret")).to_be_focused()
    row = page.locator("tr[data-webhook]").filter(has_text="typed")
    expect(row).to_contain_text("task.failed, task.*")
    tab_to(row.get_by_role("button", name="Disable"))
    page.keyboard.press("Enter")
    expect(row.get_by_role("button", name="Enable")).to_be_focused()  # the row redrawn, the focus kept
    expect(row.locator(".state")).to_have_text("disabled")
    tab_to(row.get_by_role("button", name="Delete"))
    page.keyboard.press("Enter")
    expect(row.get_by_role("button", name="Yes, delete")).to_be_focused()
    page.keyboard.press("Enter")
    expect(row).to_have_count(0)
    expect(page.locator("#message")).to_have_text("Deleted.")
    assert problems == []


def test_with_auth_on_a_session_sees_and_changes_only_its_owners(
        opened: Stack, browser: Any, receiver: Receiver, tmp_path: Path) -> None:
    """A logged-in page: its changes carry the session's CSRF token; another owner's
    subscriptions are not listed and their page is a 404; an admin sees every owner's."""
    from playwright.sync_api import expect

    alice, bob = new_key(opened.url, "alice-hooks"), new_key(opened.url, "bob-hooks")
    admin = new_key(opened.url, "ops-hooks", admin=True)
    proc, base = start_api(opened.url, tmp_path / "api.log", TASKGATE_AUTH="on", **OPEN)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            bobs = http.post("/webhooks", json={"url": receiver.url("/bob"), "events": ["task.*"]}, headers=bearer(bob))
            assert bobs.status_code == 201, bobs.text
            problems: list[str] = []
            page = page_of(browser, problems)
            page.goto(f"{base}/ui/webhooks")
            page.get_by_label("API key").fill(alice)
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#who")).to_have_text("alice-hooks")
            expect(page.get_by_role("table", name="Webhooks")).to_contain_text("No webhooks yet")
            form = page.get_by_role("form", name="Add a webhook")
            form.get_by_label("URL").fill(receiver.url("/alice"))
            form.get_by_role("button", name="Add webhook").click()
            expect(page.locator("#secret")).to_have_value(re.compile("^whsec_"))
            row = page.locator("tr[data-webhook]")
            expect(row).to_have_count(1)
            expect(row).to_contain_text(receiver.url("/alice"))
            row.get_by_role("button", name="Disable").click()  # PATCH
            expect(row.locator(".state")).to_have_text("disabled")
            row.get_by_role("link").click()
            page.get_by_role("button", name="Enable").click()
            expect(page.locator("#webhook .state")).to_have_text("enabled")
            page.get_by_role("button", name="Send test event").click()  # POST
            expect(page.locator("tr[data-delivery]").filter(has_text="webhook.test").locator(".state")).to_have_text("delivered")
            alices = http.get("/webhooks", headers=bearer(alice)).json()["webhooks"]
            assert [made["owner"] for made in alices] == ["alice-hooks"]

            page.goto(f"{base}/ui/webhooks/{bobs.json()['id']}")  # another owner's: unknown
            expect(page.locator("main .error")).to_be_visible()
            page.get_by_role("button", name="Log out").click()
            page.get_by_label("API key").fill(admin)
            page.get_by_role("button", name="Log in").click()
            expect(page.locator("#who")).to_have_text("ops-hooks (admin)")
            page.get_by_role("navigation", name="Pages").get_by_role("link", name="Webhooks").click()
            expect(page.locator("tr[data-webhook]")).to_have_count(2)
            expect(page.get_by_role("table", name="Webhooks")).to_contain_text("alice-hooks")
            expect(page.get_by_role("table", name="Webhooks")).to_contain_text("bob-hooks")
            page.locator("tr[data-webhook]").filter(has_text="alice-hooks").get_by_role("button", name="Delete").click()
            page.get_by_role("button", name="Yes, delete").click()  # DELETE
            expect(page.locator("tr[data-webhook]")).to_have_count(1)
            http.delete(f"/webhooks/{bobs.json()['id']}", headers=bearer(bob))
            assert [p for p in problems if not any(code in p for code in ("401", "404"))] == []
    finally:
        stop(proc)

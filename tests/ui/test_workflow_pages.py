"""The dashboard's workflow pages in a real browser (Playwright driving Debian's chromium) against
a real API and worker: the list shows a new workflow and filters; a workflow's page draws every
node with its state in words and follows it live to its end; cancel from the page; names and
arguments shown as text, never as HTML. Screenshots go to the test run's artifacts folder."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .test_dashboard import XSS, page_of
from .test_dashboard import browser as browser  # the fixture, shared


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("workflow-screenshots")
    print(f"workflow page screenshots: {folder}")
    return folder


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=10) as client:
        yield client


def submit(http: httpx.Client, name: str, nodes: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/workflows", json={"name": name, "nodes": nodes})
    assert response.status_code == 202, response.text
    return response.json()


def held_fan_out(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A gate (a run that holds while a file exists), then a list, a map over it, its sum."""
    hold = tmp_path / "hold"
    hold.touch()
    return hold, {
        "gate": {"task": "gated", "arguments": {"log": str(tmp_path / "runs"), "token": "gate", "hold": str(hold)}},
        "count": {"task": "numbers", "arguments": {"count": 3}, "after": ["gate"]},
        "squares": {"map": {"over": {"$result": "count"}, "task": "square", "argument": "n"}},
        "sum": {"task": "total", "arguments": {"values": {"$result": "squares"}}},
    }


def test_the_list_shows_a_new_workflow_and_filters(api_url: str, worker: subprocess.Popen[bytes], browser: Any,
                                                   http: httpx.Client, artifacts: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    page.goto(f"{api_url}/ui/")
    page.get_by_role("navigation", name="Pages").get_by_role("link", name="Workflows").click()
    expect(page).to_have_url(f"{api_url}/ui/workflows")
    expect(page.get_by_role("heading", name="Workflows")).to_be_visible()
    name = f"listed-{uuid.uuid4().hex[:8]}"
    made = submit(http, name, {"sum": {"task": "add", "arguments": {"x": 1, "y": 2}}})
    row = page.locator(f"tr[data-workflow='{made['workflow_id']}']")
    expect(row).to_be_visible()  # joined the newest page without a reload
    expect(row).to_contain_text(name)
    expect(row.locator(".state")).to_have_text("succeeded")
    expect(row).to_contain_text("1 of 1 ended")
    page.screenshot(path=artifacts / "workflows.png")

    page.get_by_role("search").get_by_label("Name").fill(name)
    page.get_by_role("search").get_by_label("State").select_option("cancelled")
    page.get_by_role("search").get_by_role("button", name="Show").click()
    expect(page).to_have_url(f"{api_url}/ui/workflows?state=cancelled&name={name}")
    expect(page.get_by_role("table", name="Workflows, newest first")).to_contain_text("No workflows match.")
    page.get_by_role("search").get_by_label("State").select_option("succeeded")
    page.get_by_role("search").get_by_role("button", name="Show").click()
    expect(page.locator("tr[data-workflow]")).to_have_count(1)
    row.get_by_role("link", name=made["workflow_id"]).click()
    expect(page).to_have_url(f"{api_url}/ui/workflows/{made['workflow_id']}")
    expect(page.locator("#workflow .state")).to_have_text("succeeded")
    assert problems == []


def test_a_workflows_page_draws_its_nodes_and_follows_them_to_the_end(
        api_url: str, worker: subprocess.Popen[bytes], browser: Any, http: httpx.Client, artifacts: Path,
        tmp_path: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    hold, nodes = held_fan_out(tmp_path)
    made = submit(http, "fan out", nodes)
    page.goto(f"{api_url}/ui/workflows/{made['workflow_id']}")
    graph = page.locator("svg.graph")
    node = {name: graph.locator(f"[data-node='{name}']") for name in nodes}
    expect(graph.locator("a.node")).to_have_count(4)
    expect(graph.locator("path.edge")).to_have_count(3)  # gate -> count -> squares -> sum
    expect(node["gate"]).to_contain_text("gated · released: started")  # held by its file
    for name in ("count", "squares", "sum"):
        expect(node[name]).to_have_attribute("data-state", "waiting")
        expect(node[name]).to_contain_text("waiting")  # the state in words, not colour alone
    expect(page.locator("#live")).to_have_text("Live")
    # columns by depth: each node right of its parent
    lefts = [node[name].locator(".node-box").bounding_box()["x"] for name in ("gate", "count", "squares", "sum")]
    assert lefts == sorted(lefts) and len(set(lefts)) == 4, lefts
    page.screenshot(path=artifacts / "workflow-running.png")

    hold.unlink()  # the page follows the rest on its own
    expect(node["sum"]).to_have_attribute("data-state", "succeeded")
    for name in nodes:
        expect(node[name]).to_contain_text("succeeded")
    expect(node["squares"]).to_contain_text("3 runs: 3 succeeded, 0 left")
    expect(page.locator("#workflow .state")).to_have_text("succeeded")
    expect(page.locator("#workflow")).to_contain_text("5")  # 0 + 1 + 4
    expect(page.get_by_role("button", name="Cancel workflow")).to_be_hidden()
    runs = page.get_by_role("table", name="Nodes").locator("tr[data-node='squares']")
    expect(runs.get_by_role("link")).to_have_count(3)
    page.screenshot(path=artifacts / "workflow-succeeded.png")

    node["squares"].click()  # a map node: its first run
    expect(page).to_have_url(f"{api_url}/ui/tasks/{made['tasks']['squares']}-0")
    expect(page.locator("#task")).to_contain_text("node squares, item 0")
    page.locator("#task").get_by_role("link", name=made["workflow_id"]).click()
    expect(page).to_have_url(f"{api_url}/ui/workflows/{made['workflow_id']}")
    node["gate"].click()
    expect(page).to_have_url(f"{api_url}/ui/tasks/{made['tasks']['gate']}")
    assert problems == []


def test_cancel_from_the_page_ends_a_running_workflow(api_url: str, worker: subprocess.Popen[bytes], browser: Any,
                                                      http: httpx.Client, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    made = submit(http, "to cancel", {
        "nap": {"task": "sleepy", "arguments": {"seconds": 120, "started_file": str(tmp_path / "started")}},
        "then": {"task": "add", "arguments": {"x": 1, "y": 1}, "after": ["nap"]},
    })
    page.goto(f"{api_url}/ui/workflows/{made['workflow_id']}")
    graph = page.locator("svg.graph")
    expect(graph.locator("[data-node='nap']")).to_contain_text("released: started")
    page.get_by_role("button", name="Cancel workflow").click()
    expect(page.locator("#workflow .state")).to_have_text("cancelled")
    expect(graph.locator("[data-node='nap']")).to_have_attribute("data-state", "cancelled")
    expect(graph.locator("[data-node='then']")).to_have_attribute("data-state", "skipped")
    expect(graph.locator("[data-node='then']")).to_contain_text("skipped")
    expect(page.get_by_role("button", name="Cancel workflow")).to_be_hidden()
    assert http.get(f"/workflows/{made['workflow_id']}").json()["state"] == "cancelled"
    graph.locator("[data-node='then']").click()  # a skipped node's run says why
    expect(page.locator("#task .state")).to_have_text("cancelled")
    expect(page.locator("#task")).to_contain_text("Skipped")
    assert problems == []


def test_names_and_arguments_show_as_text(api_url: str, worker: subprocess.Popen[bytes], browser: Any,
                                          http: httpx.Client, tmp_path: Path) -> None:
    """Node names are letters, digits, ``_`` and ``-`` (the API refuses others), so markup can
    come in a workflow's name and in arguments: both show as the text they are."""
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    name = f"{XSS}<img src=x>{uuid.uuid4().hex[:6]}"
    refused = http.post("/workflows", json={"name": "x", "nodes": {"<b>n</b>": {"task": "add", "arguments": {"x": 1, "y": 1}}}})
    assert refused.status_code == 422
    long_name = "n" + "-" * 40 + "end"  # longer than a node's box: shortened there, whole elsewhere
    made = submit(http, name, {long_name: {"task": "counted", "arguments": {"log": str(tmp_path / "runs"), "token": XSS}}})
    page.goto(f"{api_url}/ui/workflows/{made['workflow_id']}")
    expect(page.locator("#workflow .state")).to_have_text("succeeded")
    expect(page.locator("#workflow")).to_contain_text(name)  # the text itself: not run, not markup
    assert page.title() == f"Workflow {name} · taskgate"
    node = page.locator(f"svg.graph [data-node='{long_name}']")
    expect(node.locator(".node-name")).to_have_text(long_name[:23] + "…")
    expect(node.locator("title")).to_contain_text(long_name)
    expect(page.get_by_role("table", name="Nodes")).to_contain_text(long_name)
    page.goto(f"{api_url}/ui/workflows?name={name}")
    expect(page.locator(f"tr[data-workflow='{made['workflow_id']}']")).to_contain_text(name)
    node_page = f"{api_url}/ui/tasks/{made['tasks'][long_name]}"
    page.goto(node_page)
    expect(page.locator("#task")).to_contain_text(f'"{XSS}"')
    assert page.locator("#main script, #main img").count() == 0
    assert problems == []


def test_retry_from_the_page_runs_what_failed_again(api_url: str, worker: subprocess.Popen[bytes], browser: Any,
                                                    http: httpx.Client, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    problems: list[str] = []
    page = page_of(browser, problems)
    made = submit(http, "to retry", {  # `flaky` fails its first 2 starts: after its 1 retry, failed
        "flaky": {"task": "gated", "arguments": {"log": str(tmp_path / "runs"), "token": "f", "failures": 2}},
        "then": {"task": "add", "arguments": {"x": 1, "y": 1}, "after": ["flaky"]},
    })
    page.goto(f"{api_url}/ui/workflows/{made['workflow_id']}")
    graph = page.locator("svg.graph")
    expect(page.locator("#workflow .state")).to_have_text("failed")
    expect(graph.locator("[data-node='flaky']")).to_contain_text("failed")
    expect(graph.locator("[data-node='then']")).to_contain_text("skipped")
    page.get_by_role("button", name="Retry failed nodes").click()
    expect(page.locator("#workflow .state")).to_have_text("succeeded")  # followed live again
    expect(graph.locator("[data-node='then']")).to_contain_text("add · succeeded")
    expect(page.get_by_role("button", name="Retry failed nodes")).to_be_hidden()
    graph.locator("[data-node='flaky']").click()  # the node's new run
    expect(page).not_to_have_url(f"{api_url}/ui/tasks/{made['tasks']['flaky']}")
    expect(page.locator("#task .state")).to_have_text("succeeded")
    assert problems == []


def test_the_workflow_pages_fit_a_phone_and_a_node_opens_by_keyboard(
        api_url: str, worker: subprocess.Popen[bytes], browser: Any, http: httpx.Client, artifacts: Path) -> None:
    from playwright.sync_api import expect

    made = submit(http, "diamond", {
        "top": {"task": "add", "arguments": {"x": 1, "y": 1}},
        "left": {"task": "power", "arguments": {"base": {"$result": "top"}, "exponent": 2}},
        "right": {"task": "add", "arguments": {"x": {"$result": "top"}, "y": 3}},
        "bottom": {"task": "add", "arguments": {"x": {"$result": "left"}, "y": {"$result": "right"}}},
    })
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    for path in ("workflows", f"workflows/{made['workflow_id']}"):
        page.goto(f"{api_url}/ui/{path}")
        expect(page.locator("table").first).to_be_visible()
        expect(page.locator("#main .state").first).to_have_text("succeeded")
        width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"/ui/{path} scrolls sideways on a phone: {width}"
    page.screenshot(path=artifacts / "workflow-phone.png", full_page=True)
    context.close()

    page = page_of(browser, problems)
    page.goto(f"{api_url}/ui/workflows/{made['workflow_id']}")
    graph = page.locator("svg.graph")
    expect(graph.locator("[data-node='bottom']")).to_contain_text("add · succeeded")
    boxes = {name: graph.locator(f"[data-node='{name}'] .node-box").bounding_box() for name in made["tasks"]}
    assert boxes["left"]["x"] == boxes["right"]["x"] and boxes["left"]["y"] != boxes["right"]["y"], boxes
    assert boxes["top"]["x"] < boxes["left"]["x"] < boxes["bottom"]["x"], boxes
    expect(graph.locator("path.edge.edge-done")).to_have_count(4)
    page.screenshot(path=artifacts / "workflow-diamond.png")
    right = graph.locator("[data-node='right']")
    for _ in range(40):
        page.keyboard.press("Tab")
        if right.evaluate("node => node === document.activeElement"):
            break
    else:
        raise AssertionError("Tab never reached the node 'right'")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{api_url}/ui/tasks/{made['tasks']['right']}")
    expect(page.locator("#task")).to_contain_text("5")
    assert problems == []

"""/docs and /redoc work on a machine without internet: every file they load comes from the API."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from ..helpers import start_api, stop

CHROMIUM = "/usr/bin/chromium"
#: Hosts that serve front-end files; none may be named by what the docs pages load. (Swagger UI's
#: bundle names validator.swagger.io for a badge only its StandaloneLayout draws; /docs uses
#: BaseLayout, and the browser test sees no request to it.)
CDNS = ("cdn.jsdelivr.net", "unpkg.com", "cdnjs.cloudflare.com", "fonts.googleapis.com",
        "fonts.gstatic.com", "cdn.redoc.ly")
#: A literal absolute address given as an element's source in JS (`src:"https://..."`) or CSS.
JS_LOADS = re.compile(rb"""\bsrc\s*[:=]\s*["'](?:https?:)?//""")
CSS_LOADS = re.compile(rb"""(?:url\(\s*["']?|@import\s+["'])(?:https?:)?//""")
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class References(HTMLParser):
    """Every ``src=``/``href=`` in a page, as (tag, address)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [(tag, value) for name, value in attrs if name in ("src", "href") and value]


def references(html: str) -> list[tuple[str, str]]:
    parser = References()
    parser.feed(html)
    return parser.found


@pytest.fixture(scope="module")
def secured(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API with API keys required: the docs must stay public."""
    proc, base = start_api(redis_url, tmp_path_factory.mktemp("docs") / "api.log", TASKGATE_AUTH="on")
    yield base
    stop(proc)


def test_docs_pages_load_every_file_from_the_api(secured: str) -> None:
    with httpx.Client(base_url=secured, timeout=10) as http:
        assert http.post("/tasks/add", json={"x": 1, "y": 2}).status_code == 401  # auth is on
        assert http.get("/openapi.json").json()["info"]["title"] == "taskgate"
        redirect = http.get("/docs/oauth2-redirect")  # Swagger UI's OAuth2 page, as FastAPI serves
        assert redirect.status_code == 200 and "oauth2" in redirect.text
        assets: dict[str, str] = {}
        for page in ("/docs", "/redoc"):
            response = http.get(page)
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
            html = response.text
            # No absolute address anywhere, the inline Swagger UI config included.
            assert not re.search(r"https?:|//[a-z0-9]", html.replace("<!--", "").replace("-->", "")), html
            refs = references(html)
            assert {tag for tag, _ in refs} >= ({"script", "link"}), refs
            for tag, ref in refs:
                address = urlsplit(ref)
                assert not address.scheme and not address.netloc and ref.startswith("/"), (page, tag, ref)
                assets[ref] = tag
        assert 'spec-url="/openapi.json"' in http.get("/redoc").text
        assert len(assets) == 4, assets  # Swagger UI's JS and CSS, ReDoc's JS, the favicon
        for ref in assets:
            response = http.get(ref)
            assert response.status_code == 200, ref
            assert response.headers["content-type"].startswith(CONTENT_TYPES[Path(ref).suffix]), ref
            body = response.content
            assert len(body) > (100_000 if Path(ref).suffix != ".png" else 1_000), (ref, len(body))
            for cdn in CDNS:
                assert cdn.encode() not in body, (ref, cdn)
            loads = JS_LOADS if ref.endswith(".js") else CSS_LOADS
            assert not loads.search(body), (ref, loads.search(body))
        assert b"SwaggerUIBundle" in http.get("/docs/assets/swagger-ui-bundle.js").content


def chromium() -> str:
    """Debian's chromium; in CI its absence fails the test rather than skipping it."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium when run as root")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)")


def test_docs_render_in_chromium_with_the_internet_cut_off(secured: str, tmp_path: Path) -> None:
    from playwright.sync_api import Route, expect, sync_playwright

    # The pages are opened by a name, as a user on the LAN would (front-end code may treat
    # "localhost" and 127.0.0.1 specially); the browser resolves it to the API on loopback.
    port = urlsplit(secured).port
    base = f"http://taskgate.test:{port}"
    local = {"127.0.0.1", "localhost", "taskgate.test"}
    requested: list[str] = []
    outside: list[str] = []
    errors: list[str] = []

    def guard(route: Route) -> None:
        address = urlsplit(route.request.url)
        if address.scheme in ("http", "https", "ws", "wss") and address.hostname not in local:
            outside.append(route.request.url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium(),
            args=["--no-sandbox", "--host-resolver-rules=MAP taskgate.test 127.0.0.1"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.route("**/*", guard)
            context.on("request", lambda request: requested.append(request.url))
            page = context.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))

            page.goto(base + "/docs")
            expect(page.get_by_role("heading", level=1)).to_contain_text("taskgate")
            for method, path in (("GET", "/add"), ("GET", "/tasks/{task_id}"), ("POST", "/tasks/add")):
                summary = page.locator(f".opblock-summary-{method.lower()}", has=page.locator(
                    f".opblock-summary-path[data-path='{path}']"))
                expect(summary).to_be_visible()
                # Swagger UI puts a zero-width space before each slash, for line breaking.
                assert summary.inner_text().replace("\u200b", "").split()[:2] == [method, path]
            page.screenshot(path=tmp_path / "docs.png")

            page.goto(base + "/redoc")
            # ReDoc draws its menu first, then the spec's content: slower on a busy machine
            expect(page.get_by_role("heading", level=1)).to_contain_text("taskgate", timeout=30_000)
            expect(page.get_by_text("API docs by Redocly")).to_be_visible()
            # The Redocly logo, which ReDoc would load from its CDN, is dropped instead.
            expect(page.locator("img[alt='redocly logo']")).to_have_count(0)
            page.screenshot(path=tmp_path / "redoc.png")
        finally:
            browser.close()

    assert outside == [] and [url for url in requested if urlsplit(url).hostname not in local] == []
    assert errors == []
    loaded = {urlsplit(url).path for url in requested}
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/redoc.standalone.js",
            "/openapi.json"} <= loaded, loaded
    assert (tmp_path / "docs.png").stat().st_size > 10_000

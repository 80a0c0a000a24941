"""The interactive docs, /docs (Swagger UI) and /redoc, with every file served by the API itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc's, Google Fonts), so they are
blank on a machine without internet. Here the pages are FastAPI's own HTML pointed at the files
the fastapi-offline package ships (Swagger UI, ReDoc, a favicon), mounted under /docs/assets.
Like FastAPI's, these routes need no API key: the docs stay public when auth is on.
"""

from __future__ import annotations

import functools
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

#: Where the Swagger UI and ReDoc files are served.
ASSETS = "/docs/assets"
#: The files: swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png.
STATIC = Path(fastapi_offline.__file__).parent / "static"
#: ReDoc's side menu draws the Redocly logo from Redocly's CDN, with no option to turn it off.
#: Served without that address, the image fails at once and ReDoc hides it; the link text stays.
REDOC_LOGO = b'"https://cdn.redoc.ly/redoc/logo-mini.svg"'


@functools.cache
def redoc_js() -> bytes:
    """ReDoc's bundle without the address of the logo it would load from a CDN."""
    return (STATIC / "redoc.standalone.js").read_bytes().replace(REDOC_LOGO, b'""')


def install(app: FastAPI) -> None:
    """Serve /docs, its OAuth2 redirect page and /redoc on ``app``, built with ``docs_url=None``
    and ``redoc_url=None`` (its ``openapi_url`` and ``swagger_ui_oauth2_redirect_url`` are kept)."""
    assert app.openapi_url and app.swagger_ui_oauth2_redirect_url
    openapi_url, oauth2_redirect_url = app.openapi_url, app.swagger_ui_oauth2_redirect_url

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            oauth2_redirect_url=root + oauth2_redirect_url,
            init_oauth=app.swagger_ui_init_oauth, swagger_ui_parameters=app.swagger_ui_parameters)

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + openapi_url, title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png", with_google_fonts=False)

    def redoc_bundle(request: Request) -> Response:  # sync: the first call reads the file
        return Response(redoc_js(), media_type="text/javascript; charset=utf-8")

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(oauth2_redirect_url, oauth2_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    # Before the mount, which would otherwise answer with the file as shipped.
    app.add_route(f"{ASSETS}/redoc.standalone.js", redoc_bundle, include_in_schema=False)
    app.mount(ASSETS, StaticFiles(directory=STATIC), name="docs-assets")

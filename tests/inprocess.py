"""The API in the test process, for sync tests: its ASGI app behind ``httpx.ASGITransport``,
on an event loop of its own (a thread), lifespan included. ``ASGITransport`` hands back a
response once the app has sent all of it, so a stream (SSE) is read whole once it ends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi import FastAPI

#: The longest one request may take in the app when the client gives no read timeout.
DEFAULT_TIMEOUT = 60.0


class _Bridge(httpx.BaseTransport):
    """A blocking transport that runs each request on the app's event loop."""

    def __init__(self, asgi: httpx.ASGITransport, loop: asyncio.AbstractEventLoop) -> None:
        self.asgi, self.loop = asgi, loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()

        async def send() -> tuple[int, httpx.Headers, bytes]:
            forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=body)
            response = await self.asgi.handle_async_request(forwarded)
            return response.status_code, response.headers, await response.aread()

        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        limit = timeouts.get("read") or DEFAULT_TIMEOUT
        status, headers, content = asyncio.run_coroutine_threadsafe(send(), self.loop).result(limit + 5)
        return httpx.Response(status, headers=headers, content=content)


@contextmanager
def serve(app: FastAPI, timeout: float = 10) -> Iterator[httpx.Client]:
    """A client of ``app`` running in this process; the app's lifespan spans the block."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="taskgate-test-app", daemon=True)
    thread.start()
    lifespan = app.router.lifespan_context(app)
    try:
        asyncio.run_coroutine_threadsafe(lifespan.__aenter__(), loop).result(60)
        try:
            transport = _Bridge(httpx.ASGITransport(app=app), loop)
            with httpx.Client(transport=transport, base_url="http://taskgate.test", timeout=timeout) as client:
                yield client
        finally:
            asyncio.run_coroutine_threadsafe(lifespan.__aexit__(None, None, None), loop).result(60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

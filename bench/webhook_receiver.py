"""The local webhook receiver of ``make bench``'s section 16 (bench/webhooks.py): a bare ASGI app
under uvicorn, in a thread of the bench process, that answers every request 200 at once and
records each one's arrival (``time.time()`` as the request reaches the app, before its body is
read) and its ``webhook-id``. It verifies nothing: what is measured is the sender."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class Receiver:
    """Started on a free loopback port by :meth:`start`, stopped by :meth:`stop`."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str]] = []  # (unix seconds, webhook-id), in arrival order
        self._arrived = threading.Condition()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                      send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        at = time.time()
        msg_id = next((value.decode() for name, value in scope["headers"] if name == b"webhook-id"), "")
        more = True
        while more:
            more = bool((await receive()).get("more_body", False))
        with self._arrived:
            self.arrivals.append((at, msg_id))
            self._arrived.notify_all()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def start(self, port: int) -> str:
        """Serve on ``port``; the URL deliveries go to, once it accepts connections."""
        config = uvicorn.Config(self, host="127.0.0.1", port=port, lifespan="off", log_level="warning",
                                access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="bench-webhook-receiver", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port}/hook"
        return self.url

    @property
    def native_id(self) -> int:
        """The thread's id in the kernel (its CPU time: /proc/self/task/<id>/stat)."""
        assert self._thread is not None and self._thread.native_id is not None
        return self._thread.native_id

    def count(self) -> int:
        with self._arrived:
            return len(self.arrivals)

    def wait_for(self, count: int, timeout: float) -> None:
        """Until ``count`` deliveries have arrived in all, or RuntimeError after ``timeout`` s."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.arrivals) >= count, timeout):
                raise RuntimeError(f"{len(self.arrivals)} webhook deliveries arrived in {timeout:g} s, "
                                   f"not {count}")

    def wait_for_id(self, msg_id: str, timeout: float) -> float:
        """The arrival time of the first delivery with ``msg_id``, waiting up to ``timeout`` s."""
        def found() -> float | None:
            return next((at for at, seen in reversed(self.arrivals) if seen == msg_id), None)

        with self._arrived:
            if not self._arrived.wait_for(lambda: found() is not None, timeout):
                raise RuntimeError(f"no webhook delivery {msg_id} in {timeout:g} s")
            at = found()
            assert at is not None
            return at

    def since(self, start: int) -> list[tuple[float, str]]:
        """The arrivals after the first ``start``."""
        with self._arrived:
            return self.arrivals[start:]

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

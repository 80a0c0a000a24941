"""The local webhook receiver of ``make bench``'s section 16 (bench/webhooks.py): a bare ASGI app
under uvicorn, in a process of its own (as a receiver is another service: in a thread of the bench
it took the GIL from the bench's own client), that answers every ``POST`` 200 at once and records
each one's arrival (``time.time()`` as the request reaches the app, before its body is read) and
its ``webhook-id``. It verifies nothing: what is measured is the sender.

The bench asks it over HTTP (:class:`Receiver`): ``GET /_arrivals?start=N`` (the arrivals after
the first N, as JSON), ``GET /_wait?count=N&timeout=S`` (answers once N have arrived in all, 408
after S seconds), ``GET /_wait_id?msg_id=ID&timeout=S`` (the first arrival of that
``webhook-id``). Run: ``python -m bench.webhook_receiver PORT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson
import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ROOT = Path(__file__).resolve().parent.parent


class App:
    """The receiver's ASGI app (in its own process)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str]] = []  # (unix seconds, webhook-id), in arrival order
        self.arrived: asyncio.Condition | None = None

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                      send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        if self.arrived is None:
            self.arrived = asyncio.Condition()
        if scope["method"] != "POST":
            status, body = await self.answer(scope["path"], parse_qs(scope["query_string"].decode()))
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": orjson.dumps(body)})
            return
        at = time.time()
        msg_id = next((value.decode() for name, value in scope["headers"] if name == b"webhook-id"), "")
        more = True
        while more:
            more = bool((await receive()).get("more_body", False))
        async with self.arrived:
            self.arrivals.append((at, msg_id))
            self.arrived.notify_all()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        assert self.arrived is not None
        timeout = float(query.get("timeout", ["0"])[0])
        if path == "/_arrivals":
            return 200, self.arrivals[int(query.get("start", ["0"])[0]):]
        if path == "/_wait":
            count = int(query["count"][0])
            async with self.arrived:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.arrivals) >= count), timeout)
            return (200 if len(self.arrivals) >= count else 408), len(self.arrivals)
        if path == "/_wait_id":
            msg_id = query["msg_id"][0]

            def found() -> float | None:
                return next((at for at, seen in reversed(self.arrivals) if seen == msg_id), None)

            async with self.arrived:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait_for(lambda: found() is not None), timeout)
            return (200, found()) if found() is not None else (408, None)
        return 404, None


class Receiver:
    """The bench's handle on the receiver process: started on a free loopback port by
    :meth:`start`, stopped by :meth:`stop`."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self._base = ""
        self._http = httpx.Client(timeout=None)

    def start(self, port: int) -> str:
        """Serve on ``port``; the URL deliveries go to, once it answers."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.webhook_receiver", str(port)], cwd=ROOT, env=env)
        self._base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if self._http.get(self._base + "/_arrivals", params={"start": 1 << 30}).status_code == 200:
                    break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.05)
        self.url = f"{self._base}/hook"
        return self.url

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def count(self) -> int:
        return int(self._http.get(self._base + "/_wait", params={"count": 0}).json())

    def wait_for(self, count: int, timeout: float) -> None:
        """Until ``count`` deliveries have arrived in all, or RuntimeError after ``timeout`` s."""
        answer = self._http.get(self._base + "/_wait", params={"count": count, "timeout": timeout})
        if answer.status_code != 200:
            raise RuntimeError(f"{answer.json()} webhook deliveries arrived in {timeout:g} s, not {count}")

    def wait_for_id(self, msg_id: str, timeout: float) -> float:
        """The arrival time of the first delivery with ``msg_id``, waiting up to ``timeout`` s."""
        answer = self._http.get(self._base + "/_wait_id", params={"msg_id": msg_id, "timeout": timeout})
        if answer.status_code != 200:
            raise RuntimeError(f"no webhook delivery {msg_id} in {timeout:g} s")
        return float(answer.json())

    def since(self, start: int) -> list[tuple[float, str]]:
        """The arrivals after the first ``start``."""
        return [(at, msg_id) for at, msg_id in self._http.get(self._base + "/_arrivals",
                                                              params={"start": start}).json()]

    def stop(self) -> None:
        self._http.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> None:
    uvicorn.run(App(), host="127.0.0.1", port=int(sys.argv[1]), lifespan="off", log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()

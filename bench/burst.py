"""The client of section 11 (bench/concurrency.py), run in its own process:
``python -m bench.burst`` reads a JSON spec on stdin and prints a JSON answer.

``{"kind": "http", "host", "port", "requests": [...], "until": str | null}``: a burst. Each
request on its own connection, all connections opened first, then every request written
before any answer is read; each answer is read to its end (or, with ``until``, up to that
string and on to the end of its event, ``\n\n``: a stream's first event, not a keep-alive
comment). Answers, in request order: ``[status, error type, ms from its write to its complete
answer, task id]`` (status 0: the connection failed or closed before that end, the exception's
name as the error type).

``{"kind": "results", "count": N}``: ``N`` ``add`` tasks submitted in one ``asyncio.gather``
by the library (``Taskgate(builtins=["add"])``, settings from ``TASKGATE_*``), then their
``job.result()`` gathered: seconds of each gather, and the errors by exception type and message
(a wrong sum counts as one too).

Either answer carries ``cpu``, the CPU seconds this process spent (user + system) from its
first connection or submit to its last answer: the figure that shows whether the client, not the
server, set the pace.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import sys
import time
from collections import Counter
from typing import Any

import uvloop


def described(exc: BaseException) -> str:
    """The exception's type and message, ids and numbers as ``#`` (so alike errors count once)."""
    return f"{type(exc).__name__}: " + re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+(\.\d+)?", "#", str(exc))[:200]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def http_burst(host: str, port: int, requests: list[str], until: str | None) -> dict[str, Any]:
    cpu = cpu_seconds()
    began = time.perf_counter()
    opened = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in requests),
                                  return_exceptions=True)
    connected = time.perf_counter()
    written: list[float] = []
    for connection, request in zip(opened, requests, strict=True):
        written.append(time.perf_counter())
        if not isinstance(connection, BaseException):
            connection[1].write(request.encode())
    end = until.encode() if until is not None else None

    async def answer(index: int) -> list[Any]:
        connection = opened[index]
        if isinstance(connection, BaseException):
            return [0, type(connection).__name__, 0.0, ""]
        reader, writer = connection
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            body = b""
            if end is not None and status == 200:
                await reader.readuntil(end)
                await reader.readuntil(b"\n\n")
            else:
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                body = await reader.readexactly(int(length.group(1))) if length else b""
            done = (time.perf_counter() - written[index]) * 1000
            kind = re.search(rb'"type":"([a-z_]+)"', body) if status >= 300 else None
            task_id = re.search(rb'"task_id":"([^"]+)"', body) if status == 202 else None
            return [status, kind.group(1).decode() if kind else "", done,
                    task_id.group(1).decode() if task_id else ""]
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            return [0, type(exc).__name__, (time.perf_counter() - written[index]) * 1000, ""]
        finally:
            writer.close()

    async with asyncio.timeout(120):
        answers = await asyncio.gather(*(answer(index) for index in range(len(requests))))
    return {"answers": answers, "connect": connected - began, "wall": time.perf_counter() - written[0],
            "cpu": cpu_seconds() - cpu}


async def gathered_results(count: int) -> dict[str, Any]:
    from taskgate import Taskgate
    from taskgate.tasks.arithmetic import add

    errors: Counter[str] = Counter()
    async with Taskgate(builtins=["add"]) as tg:
        await (await tg.submit(add, 0, 0)).result(timeout=60)  # opened: connections and scripts ready
        cpu = cpu_seconds()
        began = time.perf_counter()
        jobs = await asyncio.gather(*(tg.submit(add, n, 1) for n in range(count)), return_exceptions=True)
        submitted = time.perf_counter()
        waiting = {n: job for n, job in enumerate(jobs) if not isinstance(job, BaseException)}
        errors.update(described(job) for job in jobs if isinstance(job, BaseException))
        async with asyncio.timeout(300):
            results = await asyncio.gather(*(job.result() for job in waiting.values()), return_exceptions=True)
        done = time.perf_counter()
    for n, result in zip(waiting, results, strict=True):
        if isinstance(result, BaseException):
            errors[described(result)] += 1
        elif result != n + 1:
            errors["wrong result"] += 1
    return {"submit": submitted - began, "results": done - submitted, "errors": dict(errors),
            "cpu": cpu_seconds() - cpu}


def main() -> None:
    spec = json.load(sys.stdin)
    if spec["kind"] == "http":
        answer = uvloop.run(http_burst(spec["host"], spec["port"], spec["requests"], spec["until"]))
    else:
        answer = uvloop.run(gathered_results(spec["count"]))
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()

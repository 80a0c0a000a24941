"""Section 13 of ``make bench``: the dashboard's live list (``GET /events``) with many feeds open
while tasks change quickly, and what the feeds cost the submits beside them.

One ``taskgate api`` with its defaults (auth off: every feed sees every task), no worker. Changes
are offered the way the worker's transition scripts make them: a ``PUBLISH`` of a task's record
(a real one, captured from a submit) on its events channel, each change a task of its own (so
coalescing merges none of them and each feed should receive every one). The feeds are read by
a separate process (``python -m bench.feeds``: raw sockets, every batch parsed as JSON),
and submits are timed one at a time beside the offered changes, first with no feed open, then
with the feeds open, in each repetition."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import redis

if TYPE_CHECKING:
    from bench.run import Report, Stack

#: Seconds after the last offered change within which a feed must have received it to count.
GRACE = 1.0
#: Submits a second timed beside the offered changes (one at a time).
SUBMITS = 20.0


def template(stack: Stack, base: str) -> bytes:
    """What a submit publishes on its task's events channel (a real record's JSON)."""
    client = redis.Redis.from_url(stack.url)
    pubsub = client.pubsub()
    try:
        pubsub.psubscribe("taskgate:events:*")
        pubsub.get_message(timeout=5)  # the confirmation
        httpx.post(f"{base}/tasks/add", json={"x": 1, "y": 2}, timeout=10).raise_for_status()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1)
            if message and message["type"] == "pmessage":
                return bytes(message["data"])
        raise RuntimeError("the probe submit published nothing")
    finally:
        pubsub.close()
        client.close()


def offer(url: str, payload: bytes, prefix: str, rate: float, seconds: float) -> Callable[[], float]:
    """Publish ``rate`` changes a second for ``seconds`` on a thread, task ids ``<prefix>-<n>``, in
    steps of 10 ms; returns a join() that answers the rate actually offered."""
    done: list[float] = []

    def run() -> None:
        client = redis.Redis.from_url(url)
        step, sent = 0.01, 0
        total = int(rate * seconds)
        began = time.monotonic()
        while sent < total:
            due = min(total, int(rate * (time.monotonic() - began + step)))
            with client.pipeline(transaction=False) as pipe:
                for n in range(sent, due):
                    pipe.publish(f"taskgate:events:{{{prefix}-{n}}}", payload)
                pipe.execute()
            sent = due
            pause = began + sent / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the load generator, not synchronising with it
        done.append(sent / (time.monotonic() - began))
        client.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def join() -> float:
        thread.join()
        return done[0]
    return join


def time_submits(base: str, until: float) -> tuple[list[float], int]:
    """Milliseconds of each ``POST /tasks/add``, one at a time, ``SUBMITS`` a second, until
    ``until`` (a failed one counted with the time it took), and how many failed."""
    out: list[float] = []
    failed = 0
    with httpx.Client(base_url=base, timeout=30) as http:
        while (now := time.monotonic()) < until:
            try:
                http.post("/tasks/add", json={"x": 1, "y": 2}).raise_for_status()
            except httpx.HTTPError:
                failed += 1
            out.append((time.monotonic() - now) * 1000)
            pause = now + 1 / SUBMITS - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing
    return out, failed


class Readers:
    """The feed-reading process: ``feeds`` open ``GET /events`` streams."""

    def __init__(self, stack: Stack, base: str, feeds: int) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.feeds", host, port, str(feeds)],
                                     env=stack.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        stack.procs.append(self.proc)
        if self.answer() != "live":
            raise RuntimeError("the feeds did not come live")

    def answer(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench.feeds exited ({self.proc.wait()})")
        return json.loads(line)

    def count(self, prefix: str) -> dict[str, Any]:
        """Per feed, the distinct changes ``<prefix>-*`` received so far; feeds that ended."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(prefix + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = self.answer()
        return answer

    def close(self) -> float:
        """Stop reading; the reader's CPU seconds."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        cpu = float(self.answer())
        self.proc.wait(30)
        return cpu


def phase(stack: Stack, base: str, payload: bytes, prefix: str, rate: float, seconds: float,
          pid: int) -> tuple[float, list[float], int, float]:
    """Offer changes and time submits beside them: (offered/s, submit ms, failed submits, API
    CPU share)."""
    from bench.concurrency import process_cpu

    cpu = process_cpu(pid)
    began = time.monotonic()
    join = offer(stack.url, payload, prefix, rate, seconds)
    submits, failed = time_submits(base, began + seconds)
    offered = join()
    return offered, submits, failed, (process_cpu(pid) - cpu) / (time.monotonic() - began)


def feeds_section(stack: Stack, args: argparse.Namespace, report: Report,
                  figures: dict[str, float] | None = None) -> None:
    """Section 13; ``figures``: where issue 25's targets table reads this section's two figures
    (``feeds_delivered``, the median feed's delivered changes/s, and ``feeds_submit_p50``, submit
    p50 with the feeds over without; medians of the repetitions), left out under ``--quick`` (its
    20 feeds at 100 changes/s are not the target's load)."""
    from bench.run import fmt, median, percentile

    feeds, rate, seconds = (20, 100.0, 3.0) if args.quick else (300, 500.0, 10.0)
    proc, base = stack.http("feeds-api", [sys.executable, "-m", "taskgate", "api", "--log-level=warning",
                                          "--no-access-log"], "/healthz")
    payload = template(stack, base)
    runs: dict[str, list[float]] = {name: [] for name in (
        "offered", "delivered", "slowest", "whole", "p50 without", "p50 with", "ratio", "cpu without",
        "cpu with", "reader cpu", "failed without", "failed with")}
    for rep in range(args.reps):
        offered, alone, failed, cpu = phase(stack, base, payload, f"fa{rep}", rate, seconds, proc.pid)
        runs["p50 without"].append(percentile(alone, 0.5))
        runs["cpu without"].append(cpu * 100)
        readers = Readers(stack, base, feeds)
        failed_alone = failed
        offered, beside, failed, cpu = phase(stack, base, payload, f"fb{rep}", rate, seconds, proc.pid)
        deadline = time.monotonic() + GRACE
        time.sleep(max(0.0, deadline - time.monotonic()))  # the window's end: what came later is late
        got = readers.count(f"fb{rep}")
        runs["reader cpu"].append(readers.close())
        total = int(rate * seconds)
        counts = [min(n, total) for n in got["counts"]] + [0] * got["ended"]
        runs["offered"].append(offered)
        runs["delivered"].append(median(counts) / seconds)
        runs["slowest"].append(min(counts) / seconds)
        runs["whole"].append(sum(n == total for n in counts) / feeds * 100)
        runs["p50 with"].append(percentile(beside, 0.5))
        runs["ratio"].append(percentile(beside, 0.5) / percentile(alone, 0.5))
        runs["cpu with"].append(cpu * 100)
        runs["failed without"].append(failed_alone)
        runs["failed with"].append(failed)
    stack.stop(proc)
    if figures is not None and not args.quick:
        figures["feeds_delivered"] = median(runs["delivered"])
        figures["feeds_submit_p50"] = median(runs["ratio"])

    report.add(f"## 13. Live feeds: {feeds} `GET /events` open, {rate:.0f} task changes offered a second")
    report.add()
    report.add(f"One `taskgate api` (defaults, auth off, no worker). Each repetition offers {rate:.0f} "
               f"changes a second for {seconds:.0f} s, each a `PUBLISH` of a real record's JSON (captured "
               "from a submit) on its own task's events channel, as the worker's transition scripts do; "
               f"{SUBMITS:.0f} `POST /tasks/add` a second are timed one at a time beside them: first with no "
               f"feed open, then with {feeds} feeds open, read by another process (raw sockets, every batch "
               "parsed as JSON). A change is *delivered* to a feed when it is in one of the feed's batches "
               f"within {GRACE:.0f} s of the end of the offering; *delivered changes/s* is, per feed, the "
               "distinct offered changes it received divided by the offering's length (each change counted "
               "once per feed): the median feed, and the slowest. A batch holds at most 500 tasks and a feed "
               "that falls behind gets the most recent changes, so it loses the oldest.")
    report.add()
    report.table(["figure", "value (each repetition)"], [
        ["changes offered /s", fmt(runs["offered"])],
        ["changes delivered /s, median feed", fmt(runs["delivered"])],
        ["changes delivered /s, slowest feed", fmt(runs["slowest"])],
        ["feeds that received every change (%)", fmt(runs["whole"])],
        ["submit p50 without feeds (ms)", fmt(runs["p50 without"], 2)],
        [f"submit p50 with {feeds} feeds (ms)", fmt(runs["p50 with"], 2)],
        ["submit p50 with / without feeds", fmt(runs["ratio"], 2)],
        ["submits failed (30 s timeout or an error answer), without / with feeds",
         f"{sum(runs['failed without']):.0f} / {sum(runs['failed with']):.0f}"],
        ["API CPU without feeds (% of a core)", fmt(runs["cpu without"])],
        [f"API CPU with {feeds} feeds (% of a core)", fmt(runs["cpu with"])],
        ["feed reader's CPU (s per repetition)", fmt(runs["reader cpu"], 1)],
    ])


# The feed reader (its own process): ``python -m bench.feeds HOST PORT FEEDS``. Prints "live" once
# every feed's first batch came; then for each prefix read on stdin, {"counts": [distinct changes
# with that prefix, per open feed], "ended": feeds closed by the API}; at end of stdin its CPU seconds.

class _Feed:
    def __init__(self) -> None:
        self.live = asyncio.Event()
        self.ended = False
        self.seen: dict[str, set[str]] = {}

    async def read(self, host: str, port: int) -> None:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
        writer.write(f"GET /events HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                raise RuntimeError(head.decode(errors="replace"))
            buffer = b""
            while size := int(await reader.readuntil(b"\r\n"), 16):  # the body's chunks
                *frames, buffer = (buffer + (await reader.readexactly(size + 2))[:-2]).split(b"\n\n")
                for frame in frames:
                    for line in frame.split(b"\n"):
                        if line.startswith(b"data: "):
                            for task in orjson.loads(line[6:]):
                                prefix, _, _ = task["task_id"].partition("-")
                                self.seen.setdefault(prefix, set()).add(task["task_id"])
                            self.live.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.ended = True
        finally:
            writer.close()


async def _read_feeds(host: str, port: int, count: int) -> None:
    feeds = [_Feed() for _ in range(count)]
    tasks = [asyncio.create_task(feed.read(host, port)) for feed in feeds]
    await asyncio.wait_for(asyncio.gather(*(feed.live.wait() for feed in feeds)), 120)
    print(json.dumps("live"), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        prefix = line.strip()
        print(json.dumps({"counts": [len(feed.seen.pop(prefix, ())) for feed in feeds if not feed.ended],
                          "ended": sum(feed.ended for feed in feeds)}), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(time.process_time()), flush=True)


if __name__ == "__main__":
    asyncio.run(_read_feeds(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))

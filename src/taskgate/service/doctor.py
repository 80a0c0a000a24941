"""``taskgate doctor``: check the configuration a deployment runs with; say how to fix each problem."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from redis import Redis
from redis.exceptions import RedisError

from .. import connections
from ..brokers import parks_delays
from ..config import Settings, is_loopback
from ..records import keys
from ..records.workers import heartbeats, missing_tasks, read_catalogue
from ..worker.celery_app import create_celery_app

#: The longest countdown the API accepts (seconds), see ``api/routes/tasks.py``.
MAX_COUNTDOWN = 30 * 86_400


@dataclass(frozen=True)
class Finding:
    """One check's outcome."""

    ok: bool
    check: str
    detail: str
    fix: str = ""


#: States whose records rightly have no TTL (the task may still run).
_UNFINISHED = (b"queued", b"started", b"retrying")

def _celery_checks(settings: Settings) -> Iterator[Finding]:
    conf = create_celery_app(settings).conf
    accepted = set(conf.accept_content or []) | set(conf.result_accept_content or [])
    unsafe = accepted - {"json", "application/json"}
    yield Finding(not unsafe, "serializers", f"accepted content: {sorted(accepted)}",
                  "accept only json (accept_content and result_accept_content)")
    yield Finding(not (conf.task_acks_late and not conf.task_reject_on_worker_lost), "late acks",
                  f"acks_late={conf.task_acks_late}, reject_on_worker_lost={conf.task_reject_on_worker_lost}",
                  "set task_reject_on_worker_lost=True with task_acks_late, or a killed task is acked, lost")
    yield Finding(bool(conf.result_expires), "result expiry", f"result_expires={conf.result_expires}",
                  "set TASKGATE_RESULT_TTL")
    if not parks_delays(settings):
        visibility = settings.visibility_timeout
        yield Finding(visibility >= MAX_COUNTDOWN, "visibility window",
                      f"visibility_timeout={visibility}s, longest countdown {MAX_COUNTDOWN}s, and delays "
                      "wait in Celery's eta (the broker is not taskgate's Redis)",
                      "use the same Redis as broker and store (delays then wait in taskgate's delayed set),"
                      f" or raise TASKGATE_VISIBILITY_TIMEOUT above {MAX_COUNTDOWN}")


def _redis_checks(client: Redis) -> Iterator[Finding]:
    try:
        client.ping()
    except RedisError as exc:
        yield Finding(False, "redis", f"unreachable: {exc}", "check TASKGATE_REDIS_URL and that Redis runs")
        return
    try:
        config: dict[str, Any] = {**cast(dict[str, Any], client.config_get("appendonly")),
                                  **cast(dict[str, Any], client.config_get("save"))}
        config = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                  for k, v in config.items()}
        persistent = config.get("appendonly") == "yes" or bool(config.get("save"))
        yield Finding(persistent, "redis persistence",
                      f"appendonly={config.get('appendonly')}, save={config.get('save')!r}",
                      "enable appendonly yes (appendfsync everysec or always), or RDB snapshots: without "
                      "them a Redis restart loses every queued task")
    except RedisError as exc:
        yield Finding(True, "redis persistence", f"could not read CONFIG ({exc}); check it by hand")
    # A record has no TTL while its task may still run; an ended one without a TTL never goes.
    immortal = [key for key in client.scan_iter(match=f"{keys.RECORD_PREFIX}*", count=200)
                if client.ttl(key) == -1 and client.hget(key, "state") not in _UNFINISHED][:3]
    yield Finding(not immortal, "record expiry", f"ended records without TTL: {immortal}" if immortal
                  else "every ended task record expires", "delete them or give them a TTL")
    beats = heartbeats(client)
    yield Finding(True, "workers", f"{len(beats)} worker(s) heartbeating")
    catalogue = read_catalogue(client)  # what the running APIs send (republished lately)
    for worker, beat in sorted(beats.items()):
        missing = missing_tasks(beat, catalogue)
        if missing:
            modules = sorted({entry["module"] for entry in missing.values()})
            names = ", ".join(name.removeprefix("taskgate.") for name in missing)
            yield Finding(False, "worker catalogue",
                          f"worker {worker} lacks {names}, which a running API sends to the queues "
                          "it consumes; those tasks wait for another worker, then fail as UnregisteredTask",
                          f"start that worker with TASKGATE_TASK_MODULES including {', '.join(modules)}")


def diagnose(settings: Settings, host: str) -> list[Finding]:
    """Every check, in order."""
    findings = list(_celery_checks(settings))
    public = not is_loopback(host)
    auth_on = settings.auth == "on" or (settings.auth == "auto" and public)
    state = "on" if auth_on else "off"
    findings.append(Finding(auth_on or not public, "auth", f"API on {host}: auth {state}",
                            "use TASKGATE_AUTH=auto or on with keys from `taskgate keys create`"))
    if settings.flower_basic_auth is not None and ":" not in settings.flower_basic_auth:
        findings.append(Finding(False, "flower", "TASKGATE_FLOWER_BASIC_AUTH is not user:password",
                                "set it as user:password"))
    client = connections.blocking(settings.require_redis_url(), settings.backend_timeout * 3)
    try:
        findings.extend(_redis_checks(client))
    finally:
        client.close()
    return findings

"""Settings: one pydantic-settings class, read from ``TASKGATE_*`` environment variables.

Nothing is built at import time; call :func:`get_settings` (cached) or build
``Settings(...)`` explicitly in tests.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .exceptions import ConfigurationError
from .limits import MAX_WEIGHT, check_weights

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "valkey://", "valkeys://")


class Settings(BaseSettings):
    """Everything taskgate reads from the environment (prefix ``TASKGATE_``)."""

    # An empty variable (`TASKGATE_REDIS_URL=`, as compose files and CI templates leave them) is unset.
    model_config = SettingsConfigDict(env_prefix="TASKGATE_", extra="ignore", env_ignore_empty=True)

    redis_url: str | None = Field(
        default=None,
        description="Redis/Valkey URL for the broker, the results and taskgate's own state. "
        "Unset: `taskgate up` starts an embedded Valkey server.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Broker URL when it differs from redis_url (redis:// or amqp://).",
    )
    result_backend: str | None = Field(
        default=None,
        description="Celery result backend URL when it differs from redis_url (a Redis URL).",
    )
    data_dir: Path = Field(
        default=Path(".taskgate"),
        description="Where the embedded Valkey keeps its data and AOF, uploads are stored "
        "(files/) and the local SMTP sink writes mail (mail/). Workers must see the same files/.",
    )
    backend_timeout: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Deadline in seconds for every broker and result-backend call made by the API.",
    )
    redis_max_connections: int = Field(
        default=50,
        ge=1,
        description="Redis connections one API process (or one open Taskgate) holds at most for "
        "its calls. Calls made at once share them (one round trip per event-loop turn), so a few "
        "carry thousands of requests; a call finding all busy waits for one within "
        "TASKGATE_BACKEND_TIMEOUT. Waits and live feeds use one pub/sub connection each besides.",
    )
    result_ttl: int = Field(
        default=86_400,
        gt=0,
        description="Seconds a task's record and result are kept after it finishes; while it may "
        "still run (queued, delayed, started, retrying) its record never expires.",
    )
    failure_ttl: int = Field(
        default=7 * 86_400,
        gt=0,
        description="Seconds a failed task's record is kept after it failed.",
    )
    max_deliveries: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Deliveries of one attempt (a worker dying mid-task counts as one) before "
        "the task is dead-lettered instead of run again.",
    )
    visibility_timeout: int = Field(
        default=86_400,
        gt=0,
        description="kombu's Redis visibility timeout: a message unacked for this long is "
        "redelivered even if its worker lives. Keep it above your longest task; taskgate's "
        "reaper recovers dead workers' tasks within about 30 s without it.",
    )
    worker_prefetch: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Messages each worker process holds at once, the one it runs included "
        "(Celery's worker_prefetch_multiplier). 1: a worker takes only what it runs, so no task "
        "waits on a busy worker behind a long one while another worker is idle. More keeps the "
        "next tasks ready in the worker, for more short tasks per second. Held messages are "
        "acknowledged only after they ran and are recovered like running ones if the worker dies.",
    )
    unregistered_timeout: int = Field(
        default=300,
        gt=0,
        description="Seconds a task no live worker has registered (its module missing from the "
        "workers' TASKGATE_TASK_MODULES) stays queued before it fails as UnregisteredTask and is "
        "dead-lettered. Meanwhile workers lacking it hand it back every 2 s.",
    )
    task_modules: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra modules holding tasks, imported by the API and the workers "
        "(comma-separated in the environment).",
    )
    max_upload_bytes: int = Field(
        default=2 * 1024**3,
        gt=0,
        description="Largest file POST /files accepts, in bytes (413 beyond it).",
    )
    smtp_url: str | None = Field(
        default=None,
        description="SMTP server for send_email (smtp://[user:password@]host:port). Unset: "
        "`taskgate up` runs a local sink that writes each message as an .eml file.",
    )
    smtp_from: str = Field(default="taskgate@localhost", description="Sender of send_email.")
    auth: Literal["on", "off", "auto"] = Field(
        default="auto",
        description="API keys: on, off, or auto (on whenever the API binds to anything but loopback).",
    )
    insecure_no_auth: bool = Field(
        default=False,
        description="Allow TASKGATE_AUTH=off on a non-loopback bind (anyone who reaches the port "
        "can run tasks).",
    )
    key_cache_ttl: float = Field(
        default=5.0, ge=0, le=3600, description="Seconds an API process may accept an API key it "
        "verified earlier without reading Redis again. `taskgate keys revoke` tells every process "
        "to drop the key at once; this is the worst case, should that notice be lost or the key "
        "be deleted by other means. 0: read Redis for every request.")
    submit_rate: int = Field(
        default=0, ge=0, description="Submissions per owner per minute, shared by all API replicas "
        "(0: unlimited); the next one gets 429 with Retry-After.")
    max_in_flight: int = Field(
        default=0, ge=0, description="Unfinished tasks per owner (0: unlimited); beyond it, 429.")
    max_schedules: int = Field(
        default=1000, ge=0, description="Schedules per owner (0: unlimited); beyond it, 429.")
    webhook_allow_http: bool = Field(
        default=False, description="Accept webhook URLs with http:// (else https:// only, a 422 at "
        "POST /webhooks). For tests and receivers on a network you trust.")
    webhook_allow_private: bool = Field(
        default=False, description="Accept webhook URLs whose host is, or resolves to, a loopback, "
        "private, link-local, reserved, multicast or cloud metadata address (169.254.169.254). Off, "
        "such a URL is refused at POST /webhooks (422) and every delivery checks the resolved "
        "addresses again before it connects (against SSRF). For tests and receivers inside your own "
        "network.")
    webhook_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0], min_length=1,
        description="Seconds between a webhook delivery's failed attempt and the next, in order "
        "(comma-separated; each waits ±20 % of itself, at random): after the last, the delivery "
        "fails. The default is Standard Webhooks' (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight "
        "attempts over about 28 hours). Read by the workers.")
    max_streams: int = Field(
        default=5000, ge=1, description="Waits held at once by one API process: SSE streams, "
        "`?wait=` reads and waiting POST /tasks/results, all carried by one Redis pub/sub "
        "connection; beyond it, 503 naming this setting.")
    max_streams_per_owner: int | None = Field(
        default=None, ge=1, description="The share of TASKGATE_MAX_STREAMS one owner may hold "
        "(unset: a quarter of it, so no one key can take more than a quarter of a process and at "
        "least four owners fit at their full share); beyond it, 429 with Retry-After. With auth "
        "off every caller is one owner, held only by TASKGATE_MAX_STREAMS.")
    max_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest JSON request body, in bytes (413 beyond it).")
    max_result_bytes: int = Field(
        default=1024 * 1024, ge=1, description="Largest result a task may return, in bytes of its JSON; a "
        "larger one fails the task (not retried) with error type ResultTooLarge, saying to store big "
        "outputs in a file and return its id. Read by the workers.")
    fair_by: Literal["off", "owner"] = Field(
        default="off", description="`owner`: every queue interleaves owners' runs in turn (each owner has "
        "at most TASKGATE_FAIR_WINDOW runs in a queue not yet started; the others wait in Redis, "
        "waiting_for `turn`), for multi-tenant services without per-task limits. Needs the broker to "
        "be the records' Redis. Read by workers as they start (set it the same on all of them).")
    fair_window: int = Field(
        default=16, ge=1, le=10_000, description="With TASKGATE_FAIR_BY=owner (read by workers): how many "
        "runs of one owner "
        "a queue holds at most, not yet started. At least the workers' total concurrency keeps them "
        "busy with one owner alone; smaller interleaves owners more tightly.")
    fair_weights: Annotated[dict[str, int], NoDecode] = Field(
        default_factory=dict, description="With TASKGATE_FAIR_BY=owner (read by workers as they start; the "
        "last worker started sets them for all): owners' weights, comma-separated `owner=weight` (e.g. "
        "`acme=3,beta=2`; each weight 1 to 1,000, owners not named 1). An owner of weight w may have w "
        "times TASKGATE_FAIR_WINDOW runs in a queue not yet started, so about w times the others' share "
        "of the workers when they are the bottleneck.")
    flower_basic_auth: str | None = Field(
        default=None, description="user:password that Flower requires; needed to bind Flower to a "
        "non-loopback address.")
    default_queue: str = Field(default="celery", description="Queue that tasks are sent to.")
    trace_url: str | None = Field(
        default=None, description="Where a trace is seen, as an http(s) URL with `{trace_id}` in "
        "it (e.g. `https://jaeger.example/trace/{trace_id}`): the dashboard's task page links a "
        "task's trace id (`GET /tasks/{task_id}`'s `trace_id`) through it. Unset: the id is shown "
        "unlinked.")
    otel: bool = Field(
        default=False, description="`on`: `taskgate api`, `worker` and `up` trace with OpenTelemetry, "
        "set up from the standard OTEL_* variables (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_ENDPOINT, "
        "OTEL_TRACES_EXPORTER: otlp, console or none); needs `pip install 'taskgate[otel]'`. A "
        "user's own app is traced through the tracer provider it sets up, whatever this says.")

    @field_validator("task_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_schedule")
    @classmethod
    def _positive_delays(cls, value: list[float]) -> list[float]:
        if any(not 0 < delay <= 7 * 86_400 for delay in value):
            raise ValueError("TASKGATE_WEBHOOK_SCHEDULE: each delay is a number of seconds above 0, "
                             "at most 604800 (a week), e.g. 5,300,1800")
        return value

    @field_validator("fair_weights", mode="before")
    @classmethod
    def _parse_weights(cls, value: object) -> object:
        shape = ("TASKGATE_FAIR_WEIGHTS: write comma-separated owner=weight, each weight a whole number "
                 f"from 1 to {MAX_WEIGHT:,} (e.g. acme=3,beta=2)")
        if isinstance(value, str):
            parsed: dict[str, object] = {}
            for item in (part.strip() for part in value.split(",")):
                if not item:
                    continue
                owner, equals, weight = (part.strip() for part in item.rpartition("="))
                if not equals or not owner or not (weight.isascii() and weight.isdigit()) or len(weight) > 12:
                    raise ValueError(f"{shape}; {item!r} is not")
                if owner in parsed:
                    raise ValueError(f"TASKGATE_FAIR_WEIGHTS: owner {owner!r} is given twice")
                parsed[owner] = int(weight)
            value = parsed
        try:
            return check_weights(value, "TASKGATE_FAIR_WEIGHTS")
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None  # it names TASKGATE_FAIR_WEIGHTS and the problem

    @field_validator("trace_url")
    @classmethod
    def _names_the_trace(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith(("http://", "https://")) and "{trace_id}" in value):
            raise ValueError("TASKGATE_TRACE_URL must be an http:// or https:// URL with {trace_id} where "
                             "the trace's id goes, e.g. https://jaeger.example/trace/{trace_id}")
        return value

    @field_validator("result_backend")
    @classmethod
    def _backend_is_redis(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(_REDIS_SCHEMES):
            raise ValueError(
                "TASKGATE_RESULT_BACKEND must be a Redis/Valkey URL (redis://host:port/db): "
                "taskgate reads results and its own task records from it"
            )
        return value

    def require_redis_url(self) -> str:
        """The Redis URL for taskgate's state, or a clear error saying how to set one."""
        url = self.redis_url or self.result_backend
        if url is None:
            raise ConfigurationError(
                "no Redis configured: set TASKGATE_REDIS_URL=redis://host:port/db, "
                "or run `taskgate up`, which starts an embedded Valkey server (a command run outside "
                "the directory `taskgate up` runs in finds it with TASKGATE_DATA_DIR=that/dir/.taskgate)"
            )
        return url

    @property
    def effective_broker_url(self) -> str:
        """The broker: TASKGATE_BROKER_URL, else the Redis URL."""
        return self.broker_url or self.require_redis_url()

    @property
    def effective_result_backend(self) -> str:
        """The Celery result backend: TASKGATE_RESULT_BACKEND, else the Redis URL."""
        return self.result_backend or self.require_redis_url()

    @property
    def broker_is_redis(self) -> bool:
        """True when the broker speaks the Redis protocol (taskgate then publishes natively)."""
        return self.effective_broker_url.startswith(_REDIS_SCHEMES)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()

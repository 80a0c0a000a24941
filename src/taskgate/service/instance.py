"""One ``taskgate up`` per data directory, and where the running one listens.

``taskgate up`` holds an exclusive ``flock`` on ``<data dir>/up.lock`` for its whole life. The
kernel drops that lock when the process ends, however it ends (SIGKILL included), so a killed
instance never blocks the next one, and a left-over file means nothing. While it holds the
lock, ``up`` keeps in ``<data dir>/up.json`` (replaced atomically) what it runs: its pid, the
API and Flower addresses, and the URLs of the embedded Valkey and the local SMTP sink it started.
Other commands run with the same data dir (from the same directory, or with the same
``TASKGATE_DATA_DIR``) read it to find the running system; a second ``up`` reads it to say which
instance is in the way.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from ..config import Settings, get_settings
from ..exceptions import ConfigurationError

#: The lock of the running ``taskgate up``, and its record, inside the data dir.
LOCK_NAME = "up.lock"
RECORD_NAME = "up.json"
#: How long ``up`` retries the lock: a reader (:func:`running`) holds it shared for an instant.
CLAIM_PATIENCE = 0.5


@dataclass
class Instance:
    """What a running ``taskgate up`` runs; URLs only for the servers it started itself."""

    pid: int
    api: str
    flower: str | None = None
    redis_url: str | None = None
    smtp_url: str | None = None


class AlreadyRunning(Exception):
    """Another live ``taskgate up`` holds the data dir."""

    def __init__(self, data_dir: Path, instance: Instance | None) -> None:
        self.data_dir, self.instance = data_dir, instance
        who = (f"pid {instance.pid}, API {instance.api}" if instance is not None
               else "its record is not written yet")
        super().__init__(
            f"another `taskgate up` is running on the data dir {data_dir} ({who}). Stop it (Ctrl-C in "
            "its terminal), use it (every taskgate command run from this directory finds it), or run a "
            "second one with its own data dir and ports: TASKGATE_DATA_DIR=/another/dir taskgate up "
            "--port 8001 --flower-port 5556")


def _read(data_dir: Path) -> Instance | None:
    try:
        fields = orjson.loads((data_dir / RECORD_NAME).read_bytes())
        return Instance(**fields) if isinstance(fields, dict) else None
    except (OSError, orjson.JSONDecodeError, TypeError):
        return None  # not written yet, or by another version: say nothing rather than fail


def try_lock(path: Path, patience: float = 0.0) -> int | None:
    """An open descriptor holding an exclusive flock on ``path`` (created if missing), or None
    if another process holds it for longer than ``patience`` seconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.02)


class Claim:
    """The lock of a data dir, held by this process until :meth:`release` (or its death)."""

    def __init__(self, data_dir: Path, instance: Instance) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.instance = instance
        fd = try_lock(self.data_dir / LOCK_NAME, CLAIM_PATIENCE)
        if fd is None:
            raise AlreadyRunning(self.data_dir, _read(self.data_dir))
        self._fd = fd
        self.write()

    def update(self, **fields: str | None) -> None:
        """Record more of what runs (e.g. the embedded Valkey's URL once it listens)."""
        for name, value in fields.items():
            setattr(self.instance, name, value)
        self.write()

    def write(self) -> None:
        """Replace the record atomically: a reader sees the old one or the new one, whole."""
        partial = self.data_dir / f"{RECORD_NAME}.{os.getpid()}"
        partial.write_bytes(orjson.dumps(asdict(self.instance)))
        partial.chmod(0o600)
        partial.replace(self.data_dir / RECORD_NAME)

    def release(self) -> None:
        """Let the next ``up`` have the data dir (closing the descriptor drops the flock)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                (self.data_dir / RECORD_NAME).unlink()
            os.close(self._fd)
            self._fd = -1


def running(data_dir: Path) -> Instance | None:
    """The live ``taskgate up`` of ``data_dir``, or None (no file, or nobody holds the lock)."""
    data_dir = Path(data_dir).resolve()
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(data_dir)  # held: a live instance
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it: a record left there is from an instance that is gone
    finally:
        os.close(fd)


def join(settings: Settings) -> Instance | None:
    """For a command given no Redis URL: the ``taskgate up`` running on its data dir, if any.

    Its embedded Valkey (and SMTP sink) URLs go into the environment and the cached settings are
    dropped, so that every part of this process, a worker's pool included, reads the same ones.
    """
    found = running(settings.data_dir)
    if found is None:
        return None
    if found.redis_url is None:
        raise ConfigurationError(
            f"`taskgate up` (pid {found.pid}) runs on this data dir with an external Redis: "
            "set TASKGATE_REDIS_URL to the URL it was given")
    os.environ["TASKGATE_REDIS_URL"] = found.redis_url
    if found.smtp_url and settings.smtp_url is None:
        os.environ["TASKGATE_SMTP_URL"] = found.smtp_url
    get_settings.cache_clear()
    return found

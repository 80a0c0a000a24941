"""A local SMTP sink (aiosmtpd) for the zero-setup default: every message becomes an .eml file.

``taskgate up`` runs ``python -m taskgate.service.smtp_sink`` when ``TASKGATE_SMTP_URL`` is unset, so
``send_email`` speaks real SMTP end to end and the mail lands in ``<data dir>/mail``.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class EmlWriter:
    """aiosmtpd handler: write each accepted message to ``directory`` as ``<time>-<id>.eml``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.eml"
        (self.directory / name).write_bytes(envelope.original_content or envelope.content)
        return "250 Message accepted for delivery"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    """Run the sink until SIGTERM or SIGINT; print its URL on the first line of stdout."""
    parser = argparse.ArgumentParser(prog="python -m taskgate.service.smtp_sink")
    parser.add_argument("--dir", type=Path, required=True, help="Where .eml files are written.")
    parser.add_argument("--port", type=int, default=0, help="Port on 127.0.0.1 (0: any free one).")
    args = parser.parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    port = args.port or free_port()
    controller = Controller(EmlWriter(args.dir), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"smtp://127.0.0.1:{port}", flush=True)
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

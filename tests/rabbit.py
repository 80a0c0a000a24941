"""A private RabbitMQ node for tests: own node name, data dir and free ports (never the shared 5672)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from .helpers import free_port, wait_for


def available() -> bool:
    """True when Debian's rabbitmq-server is installed here."""
    return shutil.which("rabbitmq-server") is not None and shutil.which("rabbitmqctl") is not None


class RabbitNode:
    """One RabbitMQ node in ``base``; ``url`` is its AMQP URL once started."""

    def __init__(self) -> None:
        # Not under pytest's tmp dir: that is 0700 root, and the server runs as the rabbitmq user.
        base = Path(tempfile.mkdtemp(prefix="taskgate-rabbit-"))
        base.chmod(0o755)
        self.base = base
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"taskgate-test-{self.port}@localhost"
        self.process: subprocess.Popen[bytes] | None = None
        for sub in ("mnesia", "log"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq.conf").write_text("")  # keep the machine's /etc/rabbitmq config out
        (base / "rabbitmq-env.conf").write_text(
            'ERL_EPMD_ADDRESS=127.0.0.1\nexport ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n')
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "feature_flags"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        }
        if os.geteuid() == 0:  # as root the server drops to the rabbitmq user, which must own its dirs
            user = pwd.getpwnam("rabbitmq")
            for path in [base, *base.rglob("*")]:
                os.chown(path, user.pw_uid, user.pw_gid)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _accepts(self) -> bool:
        assert self.process is not None
        assert self.process.poll() is None, (self.base / "out.log").read_text()[-3000:]
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self) -> None:
        with (self.base / "out.log").open("ab") as out:
            self.process = subprocess.Popen(["rabbitmq-server"], env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT)
        wait_for(self._accepts, 60, f"RabbitMQ node {self.node}", interval=0.2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env=self.env, capture_output=True,
                       timeout=60)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def remove(self) -> None:
        """Stop the node and delete its files."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

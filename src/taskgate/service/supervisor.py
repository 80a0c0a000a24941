"""``taskgate up``: run the embedded Valkey, a worker, the API and Flower as one system.

Every component is a child process in its own session, so a terminal's Ctrl-C reaches
only this supervisor, which then stops them in order: API and Flower first, then the
worker (warm shutdown: running tasks finish), then Valkey. A second Ctrl-C kills them all.
If any component dies, the supervisor names it, stops the rest and exits non-zero.

If the supervisor itself dies without stopping them (SIGKILL, an OOM kill, a closed terminal),
the kernel signals every component (Linux's parent-death signal, set in each child before it
runs): the worker gets SIGKILL (its pool children die with it, as Celery sets the same signal in
them; its unacknowledged tasks are requeued by the next worker's reaper), every other component
SIGTERM, so Valkey writes its append-only file out before it exits. Nothing is left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

#: Seconds a component gets to stop after SIGTERM before it is killed.
STOP_GRACE = 30.0


@dataclass
class Component:
    """One child process of ``taskgate up``."""

    name: str
    argv: list[str]
    address: str = ""
    #: What the component gets if the supervisor dies without stopping it.
    death_signal: int = signal.SIGTERM
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str], stdout: int | None = None) -> None:
        """Start the process in a new session (its own process group), bound to our life."""
        self.process = subprocess.Popen(self.argv, env=env, start_new_session=True, stdout=stdout,
                                        preexec_fn=die_with_parent(self.death_signal))

    @property
    def returncode(self) -> int | None:
        """Exit code once it has exited, else None."""
        return None if self.process is None else self.process.poll()

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the component's whole process group (pool children too)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)


def die_with_parent(signum: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``signum`` when this process dies (Linux PR_SET_PDEATHSIG).

    If this process died between the fork and the call, the child is already orphaned and the
    kernel will never signal it: it signals itself.
    """
    parent, libc = os.getpid(), ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signum)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return preexec


#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def port_is_free(host: str, port: int) -> bool:
    """True if a TCP server could listen on ``host:port`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def python_module(module: str, *args: str) -> list[str]:
    """argv running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


class Supervisor:
    """Starts components in order, watches them, stops them in reverse order."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo
        self.components: list[Component] = []
        self._stopping = False
        self._force = False

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping:
            self._force = True
            self.echo("taskgate: second interrupt, killing every component")
        self._stopping = True

    def install_signal_handlers(self) -> None:
        """First SIGINT/SIGTERM: graceful stop; the second: kill."""
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for."""
        return self._stopping

    def add(self, component: Component, env: dict[str, str],
            stdout: int | None = None) -> Component:
        """Start ``component`` and watch it from now on."""
        component.start(env, stdout)
        self.components.append(component)
        return component

    def dead(self) -> Component | None:
        """The first component that has exited, if any."""
        return next((c for c in self.components if c.returncode is not None), None)

    def wait_listening(self, component: Component, host: str, port: int, timeout: float = 60.0) -> bool:
        """Wait until ``host:port`` accepts connections; False if a stop was asked for, a component
        died or ``timeout`` passed first (``watch`` then reports it)."""
        deadline = time.monotonic() + timeout
        while not self._stopping and self.dead() is None and time.monotonic() < deadline:
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def watch(self, interval: float = 0.2) -> int:
        """Block until a stop is asked for (exit 0) or a component dies (exit 1)."""
        while not self._stopping:
            died = self.dead()
            if died is not None:
                self.echo(f"taskgate: {died.name} exited with code {died.returncode}; "
                          "stopping the others")
                self.stop()
                return 1
            time.sleep(interval)
        self.stop()
        return 0

    def stop(self) -> None:
        """Stop components in reverse start order; kill whatever outlives its grace period."""
        self._stopping = True
        for component in reversed(self.components):
            if component.returncode is None:
                # The leader only: a Celery worker then finishes its running tasks (warm
                # shutdown) instead of its pool children dying mid-task.
                assert component.process is not None
                component.process.send_signal(signal.SIGTERM)
                self._wait(component)
            # Reap stragglers of the group (e.g. pool children) even if the leader exited.
            component.signal_group(signal.SIGKILL)

    def _wait(self, component: Component) -> None:
        """Wait for ``component`` to exit within the grace period, saying so when that takes a
        while (a worker finishing its running tasks), and kill it after."""
        started = time.monotonic()
        deadline, told = started + STOP_GRACE, False
        while component.returncode is None:
            if self._force or time.monotonic() > deadline:
                if not self._force:
                    self.echo(f"taskgate: {component.name} still running after {STOP_GRACE:.0f} s; killed it "
                              "(its unfinished tasks run again when a worker starts)")
                component.signal_group(signal.SIGKILL)
                assert component.process is not None
                component.process.wait()
                return
            if not told and time.monotonic() - started > 1:
                told = True
                why = " (it completes its running tasks)" if component.name.startswith("worker") else ""
                self.echo(f"taskgate: waiting up to {STOP_GRACE:.0f} s for {component.name} to finish{why}; "
                          "Ctrl-C again to kill it now")
            time.sleep(0.05)

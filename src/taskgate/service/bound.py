"""``python -m taskgate.service.bound SIGNAL COMMAND...``: run COMMAND bound to the life of this
launcher's parent. Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``) is set, then the
command replaces this process (the signal survives ``exec``). ``taskgate up --reload`` runs the
worker this way under watchfiles: if watchfiles dies, the worker dies with it, as it does with
``up`` itself without ``--reload`` (see ``supervisor``)."""

from __future__ import annotations

import ctypes
import os
import sys

from .supervisor import PR_SET_PDEATHSIG


def bind_to_parent(signum: int, parent: int) -> None:
    """Get ``signum`` when this process's parent dies; at once if it is no longer ``parent``
    (it died before the signal was set, and the kernel would never send it)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)


def main(argv: list[str]) -> None:
    signum, command = int(argv[0]), argv[1:]
    bind_to_parent(signum, os.getppid())
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])

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


def main(argv: list[str]) -> None:
    signum, command = int(argv[0]), argv[1:]
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:  # the parent died before the signal was set
        os.kill(os.getpid(), signum)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])

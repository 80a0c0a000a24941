"""What the API and a library user call: submit (:mod:`.submit`), read and wait
(:mod:`.reads`), control (:mod:`.control`), assembled by :class:`Producer`; every call bounded
by ``TASKGATE_BACKEND_TIMEOUT`` (:mod:`.deadlines`)."""

from __future__ import annotations

from .client import Producer
from .submit import SYSTEM, Options, Submission

__all__ = ["SYSTEM", "Options", "Producer", "Submission"]

"""What every part of the producer shares: the settings, the records' Redis and its scripts,
and the deadline each call runs under."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from ..config import Settings
from ..records.scripts import AsyncScripts
from .deadlines import Deadline


@dataclass(frozen=True, slots=True)
class Backend:
    """The records' Redis as the producer uses it."""

    settings: Settings
    redis: Redis
    scripts: AsyncScripts

    @property
    def timeout(self) -> float:
        """``TASKGATE_BACKEND_TIMEOUT``: the longest any call may take."""
        return self.settings.backend_timeout

    def deadline(self, component: str = "redis") -> Deadline:
        """Run a block within the timeout; any failure becomes ``BackendUnavailable``."""
        return Deadline(self.settings.backend_timeout, component)

"""A task that logs while it runs, for the JSON log tests (loaded via TASKGATE_TASK_MODULES)."""

from __future__ import annotations

import logging

import taskgate

log = logging.getLogger(__name__)


@taskgate.task
def chatty(message: str) -> str:
    """Log ``message`` (INFO, through the standard logging module) while it runs; return it."""
    log.info("saying %s", message)
    return message

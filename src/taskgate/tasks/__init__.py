"""taskgate's built-in tasks. Each is a thin Celery task over a plain function."""

from __future__ import annotations

from .arithmetic import add

__all__ = ["add"]

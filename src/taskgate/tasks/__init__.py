"""taskgate's built-in tasks. Each is a thin task over a plain function."""

from __future__ import annotations

from .arithmetic import add
from .compute import count_primes
from .email import send_email
from .files import process_file

__all__ = ["add", "count_primes", "process_file", "send_email"]

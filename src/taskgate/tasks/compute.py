"""Heavy computation: counting primes with a segmented sieve (CPU-bound, flat memory)."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import Field

from ..declare import task
from ..worker.running import raise_if_cancelled, report_progress

#: Largest ``limit`` accepted over HTTP (tens of seconds of one core here).
MAX_PRIME_LIMIT = 10_000_000_000
#: Numbers sieved per segment: bounds memory (one bytearray of this size).
SEGMENT = 1 << 20


def count_primes_below(limit: int) -> int:
    """How many primes are < ``limit``; reports progress and honours cancellation per segment."""
    if limit < 3:
        return 0
    root = math.isqrt(limit - 1)
    small = bytearray([1]) * (root + 1)
    small[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(root) + 1):
        if small[i]:
            small[i * i::i] = bytes(len(range(i * i, root + 1, i)))
    base = [i for i in range(2, root + 1) if small[i]]
    count = 0
    for low in range(0, limit, SEGMENT):
        raise_if_cancelled()
        high = min(low + SEGMENT, limit)
        segment = bytearray([1]) * (high - low)
        for p in base:
            start = max(p * p, (low + p - 1) // p * p)
            if start >= high:
                if p * p >= high:
                    break
                continue
            segment[start - low::p] = bytes(len(range(start, high, p)))
        if low < 2:
            segment[: 2 - low] = bytes(2 - low)
        count += segment.count(1)
        report_progress(high, limit, f"sieved {high:,} of {limit:,}")
    return count


@task
def count_primes(limit: Annotated[int, Field(ge=0, le=MAX_PRIME_LIMIT,
                                             description="Count the primes below this number.")]) -> int:
    """Count the primes below `limit` (CPU-bound, with progress and cooperative cancel)."""
    return count_primes_below(limit)

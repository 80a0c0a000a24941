"""The API's control of a task: :func:`cancel` it, :func:`requeue` a dead letter."""

from __future__ import annotations

from .. import keys
from .calls import Call, _text, _transition


def cancel(task_id: str, owner: str, *, now: float, ttl: int) -> Call[str]:
    """``cancelled`` (it was queued or retrying), ``cancelling`` (running: flagged),
    ``missing``, or ``already:<state>``. Either of the first two records ``cancel_requested_at``
    (``now``; a later ask keeps the first), which stays whatever state the task ends in."""
    return Call("cancel", [*_transition(task_id, owner), keys.DELAYED], [task_id, repr(now), ttl], _text)


def requeue(task_id: str, owner: str, *, queue: str | None, message: bytes, now: float,
            trace_id: str = "", span_id: str = "") -> Call[str]:
    """Queue a dead letter again (``queue``: the Redis list to push ``message`` to; None when
    the broker is elsewhere; ``trace_id`` and ``span_id``: its new run's trace and submit span,
    kept in the record when given).
    ``queued``, ``waiting`` (for its task's limits), or ``missing`` when it is not a dead
    letter."""
    return Call("requeue", [*_transition(task_id, owner), keys.DEAD, queue or ""],
                [task_id, message, repr(now), trace_id, span_id], _text)

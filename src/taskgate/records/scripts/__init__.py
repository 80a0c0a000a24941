"""The Lua scripts that change task records, one typed Python function per script.

Each script is a file here, ``<name>.lua`` (shipped in the wheel), beginning by binding its
``KEYS`` and ``ARGV`` to named locals; ``--#include <file>.lua`` shares Lua between them.

A function builds a :class:`Call`: the script's name, every key it touches (scripts never build
key names themselves, see :mod:`taskgate.records.keys`), its arguments and how to read its
reply. :class:`Scripts` (blocking, for the worker) and :class:`AsyncScripts` (for the API) run
calls. They are written one family to a module and all named here:

* :mod:`.calls`: the Lua text (:func:`source`), :class:`Call` and the runners;
* :mod:`.submitting`: a new run (:class:`Enqueue`, :func:`submit`);
* :mod:`.scheduling`: a schedule's tick (:func:`fire`) and its writes (:func:`schedule_put`);
* :mod:`.transitions`: the worker's, from :func:`start` to :func:`succeeded` and its kin;
* :mod:`.keepers`: admission's (:func:`admit`, :func:`reclaim`) and recovery's (:func:`release`,
  :func:`expire`);
* :mod:`.control`: the API's (:func:`cancel`, :func:`requeue`).

Webhooks' and workflows' calls live with their records (:mod:`taskgate.records.webhooks`,
:mod:`taskgate.records.webhooks_scripts`, :mod:`taskgate.records.workflows`).
"""

from __future__ import annotations

from .calls import NAMES, Arg, AsyncScripts, AtSend, Call, Scripts, resolve, source
from .control import cancel, requeue
from .keepers import ExpireReply, ExpireVerdict, Hold, admit, expire, reclaim, release
from .scheduling import FireMode, PutMode, fire, schedule_put
from .submitting import STORED_LIMITS, Enqueue, SubmitKind, SubmitReply, submit
from .transitions import (
    Move,
    Moved,
    StartReply,
    StartVerdict,
    cancelled,
    dead,
    failed,
    lost,
    park,
    progress,
    refused,
    retrying,
    start,
    succeeded,
    unknown,
)

__all__ = [
    "NAMES", "STORED_LIMITS", "Arg", "AsyncScripts", "AtSend", "Call", "Enqueue", "ExpireReply",
    "ExpireVerdict", "FireMode", "Hold", "Move", "Moved", "PutMode", "Scripts", "StartReply",
    "StartVerdict", "SubmitKind", "SubmitReply", "admit", "cancel", "cancelled", "dead", "expire",
    "failed", "fire", "lost", "park", "progress", "reclaim", "refused", "release", "requeue",
    "resolve", "retrying", "schedule_put", "source", "start", "submit", "succeeded", "unknown",
]

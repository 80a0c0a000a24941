"""The task record: its typed model and codec (:mod:`.model`), every Redis key (:mod:`.keys`),
and the Lua scripts that change it with their typed calls (:mod:`.scripts`: ``scripts/*.lua``
beside the modules calling them)."""

from __future__ import annotations

from . import keys, scripts
from .model import Change, TaskRecord, decode, decode_event, encode, stamp

__all__ = ["Change", "TaskRecord", "decode", "decode_event", "encode", "keys", "scripts", "stamp"]

"""The task record: its typed model and codec (:mod:`.model`), every Redis key (:mod:`.keys`),
and the Lua scripts that change it (:mod:`.scripts`, sources in ``scripts/*.lua``)."""

from __future__ import annotations

from . import keys, scripts
from .model import Change, TaskRecord, decode, decode_event, encode, stamp

__all__ = ["Change", "TaskRecord", "decode", "decode_event", "encode", "keys", "scripts", "stamp"]

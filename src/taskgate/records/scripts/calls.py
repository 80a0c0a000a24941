"""What every script call is made of and what runs it: the Lua text of each script
(:func:`source`), a run of one (:class:`Call`) and the runners (:class:`Scripts`,
:class:`AsyncScripts`).

Each script lives in ``<name>.lua`` beside this module (shipped in the wheel) and begins by
binding its ``KEYS`` and ``ARGV`` to named locals. A line ``--#include <file>.lua`` is replaced
by that file's text when the script is loaded (the one mechanism for shared Lua).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic, TypeVar

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.commands.core import AsyncScript, Script

from ...states import TaskState
from .. import keys
from ..model import stamp

T = TypeVar("T")
#: What Redis accepts as a script argument.
Arg = str | bytes | int | float

#: Every script in this package that can be run (the others are only included).
NAMES = ("submit", "start", "finish", "progress", "cancel", "park", "lost", "dead", "requeue", "unknown",
         "release", "fire", "schedule_put", "expire", "admit", "reclaim",
         "workflow_submit", "workflow_cancel", "workflow_retry", "webhook_put", "webhook_drop",
         "webhook_claim", "webhook_result", "webhook_test", "webhook_retry")

_INCLUDE = re.compile(r"^--#include (\S+\.lua)$", re.MULTILINE)


@functools.cache
def source(name: str) -> str:
    """The Lua text of script ``name``, its includes expanded."""
    text = resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda match: source(match.group(1).removesuffix(".lua")), text)


@dataclass(frozen=True, slots=True)
class AtSend:
    """A script argument read only as its call is sent (``value()``): the submit script's
    deadline counts from the moment the call leaves for Redis, not from when it was made (on a
    busy event loop the two are apart; see ``producer.autopipeline``)."""

    value: Callable[[], Arg]


def resolve(args: Sequence[Arg | AtSend]) -> list[Arg]:
    """``args`` as sent now (each :class:`AtSend` read)."""
    return [arg.value() if isinstance(arg, AtSend) else arg for arg in args]


def _deadline(deadline: float | AtSend | None) -> Arg | AtSend:
    """A script's deadline argument: in ms on Redis's clock, or read as sent; '' for none."""
    return deadline if isinstance(deadline, AtSend) else "" if deadline is None else stamp(deadline)


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One run of a script: its keys and arguments, and how to read its reply."""

    script: str
    keys: list[str]
    args: list[Arg | AtSend]
    parse: Callable[[Any], T]


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


V = TypeVar("V", bound=str)


@dataclass(frozen=True)  # no slots: Python 3.11's slotted frozen generic dataclasses fail in __init__
class Verdict(Generic[V]):
    """What a guarded script decided (``start``, ``expire``); for verdict ``owner`` (the
    record's owner is not the one given: nothing changed, call again with it), that owner."""

    verdict: V
    owner: str | None = None


def _verdict(reply: Any) -> Verdict[Any]:
    said = _text(reply)
    if said.startswith("owner:"):
        return Verdict("owner", said.removeprefix("owner:"))
    return Verdict(said)


def _state(reply: Any) -> TaskState | None:
    """A script's reply naming a state; None for nil (no record) or an unknown name."""
    if reply is None or reply is False:
        return None
    try:
        return TaskState(_text(reply))
    except ValueError:
        return None


def _transition(task_id: str, owner: str) -> list[str]:
    """The first five keys of every script including ``transition.lua``."""
    return [keys.record(task_id), keys.events(task_id), keys.alive(task_id), keys.STATS,
            keys.inflight(owner)]


class Scripts:
    """Runs calls on a blocking client (the worker's)."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._scripts: dict[str, Script] = {name: client.register_script(source(name)) for name in NAMES}

    def __call__(self, call: Call[T]) -> T:
        return call.parse(self._scripts[call.script](keys=call.keys, args=resolve(call.args)))

    def many(self, calls: Sequence[Call[T]]) -> list[T]:
        """Run ``calls`` in one round trip (a pipeline, not a transaction), their replies in order."""
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            self._scripts[call.script](keys=call.keys, args=resolve(call.args), client=pipe)
        return [call.parse(reply) for call, reply in zip(calls, pipe.execute(), strict=True)]


class AsyncScripts:
    """Runs calls on an asyncio client (the API's)."""

    def __init__(self, client: AsyncRedis) -> None:
        self.client = client
        self._scripts: dict[str, AsyncScript] = {name: client.register_script(source(name))
                                                 for name in NAMES}

    async def __call__(self, call: Call[T]) -> T:
        return call.parse(await self._scripts[call.script](keys=call.keys, args=resolve(call.args)))

    async def many(self, calls: Sequence[Call[T]]) -> list[T]:
        """Run ``calls`` in one round trip (a pipeline, not a transaction), their replies in order."""
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            await self._scripts[call.script](keys=call.keys, args=resolve(call.args), client=pipe)
        return [call.parse(reply) for call, reply in zip(calls, await pipe.execute(), strict=True)]

"""Sends webhook deliveries: the :class:`Deliverer` every worker's keeper runs.

The script that ends a run or a workflow writes its deliveries and makes them due at once
(``records/scripts/webhooks.lua``); any worker's deliverer may send them. Each runs in a process
of its own beside the worker's main process (``webhook_process``: it holds neither the worker's
GIL nor its CPU priority, and goes on while the worker is frozen), with one asyncio loop, one
Redis client and one ``aiohttp`` session (``webhook_transport``), started and stopped with the
keeper (``recovery``):

* **claim**: as soon as a send ends, when a delivery becomes due while none was (the end script
  publishes a wake-up), and every :data:`TICK` s (retries coming due, leases ending), it claims
  due deliveries
  (``webhook_claim.lua``), at most as many as it has free places (:data:`MAX_IN_FLIGHT` in
  all). A claim is a lease of :data:`LEASE` s: a worker killed before it records the attempt
  loses nothing, the delivery is due again when the lease ends, for any keeper (at least once:
  the receiver may then see a ``webhook-id`` twice);
* **send**: at most :data:`PER_SUBSCRIPTION` at once per subscription, and at most
  :data:`WAITING_PER_SUBSCRIPTION` more held under their lease and started as its sends end,
  the next claim made only once none waits (so a backlog of one subscription at the head of the
  due set is not claimed and given back at each send's end); one claimed past that is given
  back, due again in :data:`GIVE_BACK` s; a slow receiver holds only its own places;
  each attempt first checks the URL (``webhooks_guard.check_url``: https, no private address
  unless allowed; its connections go only to addresses checked as they connect:
  ``webhook_transport``), then POSTs the signed body (``webhook_payload``) within
  :data:`TIMEOUT` s, no redirect followed, reading at most :data:`MAX_RESPONSE` bytes;
* **trace**: with tracing on (the deliverer process sets up the SDK as the worker does), each
  attempt is a CLIENT span ``POST`` starting a trace of its own, linked to the trace the run's
  record kept, and its request carries the W3C ``traceparent`` so the receiver can continue it;
* **record** (``webhook_result.lua``): a 2xx is ``delivered``; a 410 disables the subscription;
  anything else is tried again after the next delay of ``TASKGATE_WEBHOOK_SCHEDULE`` (±20 %),
  or fails once the schedule is spent; a subscription failing for :data:`FAILING_LIMIT` s is
  disabled. A delivery whose subscription is gone or disabled is dropped unsent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import aiohttp
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError

from .. import connections, tracing
from ..config import Settings
from ..exceptions import UnsafeURL
from ..records import keys, scripts
from ..records import webhooks_scripts as calls
from ..records.webhooks import Delivery, Subscription, decode, decode_delivery
from ..webhooks_guard import check_url
from . import webhook_payload
from .webhook_transport import guarded_session

log = logging.getLogger("taskgate.webhooks")

#: Seconds between claims while nothing wakes the deliverer sooner.
TICK = 1.0
#: Seconds a claimed delivery is its sender's before any keeper may claim it again.
LEASE = 60.0
#: Sends at once, in all and per subscription.
MAX_IN_FLIGHT = 32
PER_SUBSCRIPTION = 4
#: Claimed deliveries a subscription may have waiting for one of its places (each sent within
#: its lease even when each of its sends takes the whole :data:`TIMEOUT`).
WAITING_PER_SUBSCRIPTION = 16
#: Seconds one attempt may take (connect, send, answer), in all.
TIMEOUT = 10.0
#: Bytes of a receiver's answer read at most.
MAX_RESPONSE = 64 * 1024
#: Seconds until a claimed delivery given back (its subscription's places all taken) is due again.
GIVE_BACK = 1.0
#: Seconds a subscription may keep failing (no attempt delivered) before it is disabled.
FAILING_LIMIT = 5 * 86_400
#: Of a failed attempt's answer, the characters kept as its ``last_error``.
ERROR_EXCERPT = 200
#: Seconds sends under way get to end when the worker stops (one cut short is sent again once
#: its lease ends).
STOP_GRACE = 3.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt went: the outcome for ``webhook_result.lua``, the answer's status (None:
    no answer), and what went wrong (empty when delivered)."""

    outcome: calls.Outcome
    status: int | None = None
    error: str = ""


def next_delay(schedule: list[float], attempts: int) -> float | None:
    """Seconds until the attempt after the ``attempts``-th failed one (±20 %); None when the
    schedule is spent."""
    if attempts > len(schedule):
        return None
    return schedule[attempts - 1] * random.uniform(0.8, 1.2)



def _told(delivery: Delivery) -> tracing.Link | None:
    """A link from an attempt's span to what its event tells of: a run's trace (the one its
    record kept) or a workflow's submit span; None for a test event or what was untraced."""
    run = webhook_payload.trace_of(delivery)
    if run:
        return tracing.link(run, attributes={"taskgate.task.id": webhook_payload.task_id_of(delivery.msg_id)})
    workflow = webhook_payload.workflow_span_of(delivery)
    if workflow:
        named = {"taskgate.workflow.id": str(delivery.payload.get("workflow_id", ""))}
        return tracing.link_to(workflow, named)
    return None

class Deliverer:
    """One worker's webhook sender (see the module's docstring), run by :meth:`main` in the
    deliverer process (``webhook_process``) until :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schedule = list(settings.webhook_schedule)
        self._stopping = False
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._per_subscription: Counter[str] = Counter()
        #: Claimed deliveries waiting for one of their subscription's places, by subscription.
        self._waiting: dict[str, deque[tuple[str, Delivery, Subscription]]] = {}

    def stop(self) -> None:
        """Stop claiming (from the loop running :meth:`main`); sends under way get
        :data:`STOP_GRACE` s to end."""
        self._stopping = True
        self._wake.set()

    async def main(self) -> None:
        """Claim and send until :meth:`stop`: at each wake (a send's end, a new delivery due at
        once, see :meth:`_listen`) or every :data:`TICK` s."""
        redis = connections.fail_fast(self.settings.require_redis_url(), connections.KEEPER_TIMEOUT,
                                      max_connections=8)
        run = scripts.AsyncScripts(redis)
        listener = asyncio.create_task(self._listen(redis))
        try:
            async with guarded_session(self.settings, connections=MAX_IN_FLIGHT, timeout=TIMEOUT) as http:
                while not self._stopping:
                    self._wake.clear()
                    try:
                        await self._claim(run, redis, http)
                    except (RedisError, OSError) as exc:
                        log.warning("taskgate webhooks: %s", exc)
                    except Exception:  # the next pass tries again; a dead deliverer would not
                        log.exception("taskgate webhooks: unexpected error")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), TICK)
                if self._sending:
                    await asyncio.wait(self._sending, timeout=STOP_GRACE)
        finally:
            listener.cancel()
            for task in self._sending:
                task.cancel()
            await redis.aclose()

    async def _listen(self, redis: AsyncRedis) -> None:
        """Wake the claim loop when the end script says a delivery became due while none was
        (``PUBLISH`` on :data:`~taskgate.records.keys.WEBHOOK_WAKE`, ``webhooks.lua``); without
        it (Redis away) the loop still claims every :data:`TICK` s."""
        while not self._stopping:
            try:
                async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(keys.WEBHOOK_WAKE)
                    while not self._stopping:
                        if await pubsub.get_message(timeout=TICK) is not None:
                            self._wake.set()
            except (RedisError, OSError):
                await asyncio.sleep(TICK)  # Redis is away: the claims say so; try again later

    async def _claim(self, run: scripts.AsyncScripts, redis: AsyncRedis,
                     http: aiohttp.ClientSession) -> None:
        """Claim what fits in the free places and start sending it, or hold it for its
        subscription's next free place."""
        free = MAX_IN_FLIGHT - len(self._sending) - sum(len(held) for held in self._waiting.values())
        if free <= 0:
            return
        claimed = await run(calls.claim(free, round(LEASE * 1000)))
        if not claimed:
            return
        pipe = redis.pipeline(transaction=False)
        for key in claimed:
            pipe.hgetall(key)
        found = [decode_delivery(calls.delivery_id_of(key), raw)
                 for key, raw in zip(claimed, await pipe.execute(), strict=True)]
        ids = sorted({delivery.webhook_id for delivery in found if delivery is not None})
        pipe = redis.pipeline(transaction=False)
        for webhook_id in ids:
            pipe.hgetall(keys.webhook(webhook_id))
        subscriptions = {webhook_id: decode(webhook_id, raw)
                         for webhook_id, raw in zip(ids, await pipe.execute(), strict=True)}
        back: list[str] = []
        for key, delivery in zip(claimed, found, strict=True):
            if delivery is None or delivery.state != "pending":  # it only leaves the due set
                await run(calls.result(key, delivery.webhook_id if delivery else "", "dropped", ttl=1,
                                       streak_ms=0))
                continue
            subscription = subscriptions.get(delivery.webhook_id)
            if subscription is None or not subscription.enabled:
                why = ("its subscription was deleted" if subscription is None else
                       f"its subscription is disabled: {subscription.disabled_reason or 'by its owner'}")
                await self._record(run, key, delivery, Attempt("dropped", error=f"not sent: {why}"))
            elif self._per_subscription[delivery.webhook_id] < PER_SUBSCRIPTION:
                self._start(run, http, key, delivery, subscription)
            else:
                held = self._waiting.setdefault(delivery.webhook_id, deque())
                if len(held) < WAITING_PER_SUBSCRIPTION:
                    held.append((key, delivery, subscription))
                else:
                    back.append(key)
        if back:
            await redis.zadd(keys.WEBHOOK_DUE, dict.fromkeys(back, (time.time() + GIVE_BACK) * 1000), xx=True)

    def _start(self, run: scripts.AsyncScripts, http: aiohttp.ClientSession, key: str, delivery: Delivery,
               subscription: Subscription) -> None:
        self._per_subscription[delivery.webhook_id] += 1
        task = asyncio.create_task(self._send(run, http, key, delivery, subscription))
        self._sending.add(task)

    async def _send(self, run: scripts.AsyncScripts, http: aiohttp.ClientSession, key: str,
                    delivery: Delivery, subscription: Subscription) -> None:
        try:
            try:
                async with asyncio.timeout(TIMEOUT):
                    attempt = await self._attempt(http, delivery, subscription)
            except TimeoutError:
                attempt = Attempt("error", error=f"no answer within {TIMEOUT:g} s")
            await self._record(run, key, delivery, attempt)
        except (RedisError, OSError) as exc:  # its lease ends, and it is sent again
            log.warning("taskgate webhooks: %s not recorded: %s", delivery.delivery_id, exc)
        except Exception:
            log.exception("taskgate webhooks: %s failed unexpectedly", delivery.delivery_id)
        finally:
            self._per_subscription[delivery.webhook_id] -= 1
            if not self._per_subscription[delivery.webhook_id]:
                del self._per_subscription[delivery.webhook_id]
            self._sending.discard(cast(asyncio.Task[None], asyncio.current_task()))
            waiting = self._waiting.get(delivery.webhook_id)
            if waiting and not self._stopping:  # its next one takes the place, no claim
                self._start(run, http, *waiting.popleft())
            else:
                self._waiting.pop(delivery.webhook_id, None)
                self._wake.set()

    async def _attempt(self, http: aiohttp.ClientSession, delivery: Delivery,
                       subscription: Subscription) -> Attempt:
        """One attempt (:meth:`_post`), traced: a CLIENT span ``POST`` of a trace of its own,
        linked to the trace of what its event tells of (a run's end: the trace its record kept;
        a workflow's end: its submit's span), carried to the receiver in the request's
        ``traceparent``."""
        if not tracing.active():
            return await self._post(http, delivery, subscription)
        attributes: dict[str, str | int] = {
            "taskgate.webhook.id": delivery.webhook_id, "taskgate.webhook.event": delivery.type,
            "taskgate.webhook.delivery.id": delivery.delivery_id, "taskgate.webhook.msg_id": delivery.msg_id,
            "taskgate.webhook.attempt": delivery.attempts + 1}
        with tracing.client_span("POST", subscription.url, root=True, attributes=attributes,
                                 links=[_told(delivery)]) as span:
            attempt = await self._post(http, delivery, subscription)
            if span is not None:
                tracing.answered(span, attempt.status, attempt.error)
            return attempt

    async def _post(self, http: aiohttp.ClientSession, delivery: Delivery,
                    subscription: Subscription) -> Attempt:
        """Check the URL's addresses now, then POST the signed event and read the answer."""
        try:
            await check_url(subscription.url, self.settings)
        except UnsafeURL as exc:
            return Attempt("error", error=str(exc))
        content = webhook_payload.body(delivery)
        now = time.time()
        headers = webhook_payload.headers(delivery.msg_id, now, content, subscription.signing_secrets(now))
        tracing.inject(headers)  # traced: the receiver continues this attempt's trace
        answer = bytearray()
        try:
            async with http.post(subscription.url, data=content, headers=headers,
                                 allow_redirects=False) as response:
                while len(answer) < MAX_RESPONSE:
                    chunk = await response.content.read(MAX_RESPONSE - len(answer))
                    if not chunk:
                        break
                    answer += chunk
        except TimeoutError:
            return Attempt("error", error=f"no answer within {TIMEOUT:g} s")
        except UnsafeURL as exc:  # refused as it connected (``webhook_transport``)
            return Attempt("error", error=str(exc))
        except aiohttp.ClientConnectorError as exc:  # aiohttp's own text says "ssl:default" for http too
            why = f"could not connect to {exc.host}:{exc.port}: {exc.os_error.strerror or exc.os_error}"
            return Attempt("error", error=why[:ERROR_EXCERPT])
        except aiohttp.ClientError as exc:
            return Attempt("error", error=f"{type(exc).__name__}: {exc}"[:ERROR_EXCERPT])
        status = response.status
        if 200 <= status < 300:
            return Attempt("delivered", status)
        excerpt = bytes(answer[:ERROR_EXCERPT]).decode(errors="replace")
        if 300 <= status < 400:
            return Attempt("error", status, f"HTTP {status}: redirects are not followed")
        return Attempt("gone" if status == 410 else "error", status, f"HTTP {status}: {excerpt}".strip())

    async def _record(self, run: scripts.AsyncScripts, key: str, delivery: Delivery,
                      attempt: Attempt) -> None:
        delay = next_delay(self.schedule, delivery.attempts + 1) if attempt.outcome == "error" else None
        when = datetime.now(UTC).isoformat(timespec="seconds")
        reason = (f"the receiver answered 410 Gone at {when}" if attempt.outcome == "gone" else
                  f"no delivery succeeded for more than {FAILING_LIMIT / 86_400:g} days (until {when})")
        said = await run(calls.result(
            key, delivery.webhook_id, attempt.outcome, status=attempt.status, error=attempt.error,
            retry_ms=None if delay is None else round(delay * 1000), ttl=self.settings.failure_ttl,
            streak_ms=FAILING_LIMIT * 1000, reason=reason))
        if said == "delivered":  # one a run: not a line each at INFO
            log.debug("taskgate webhooks: %s delivered (attempt %d)", delivery.delivery_id,
                      delivery.attempts + 1)
        elif said == "retrying":
            log.info("taskgate webhooks: %s retrying (attempt %d): %s", delivery.delivery_id,
                     delivery.attempts + 1, attempt.error or attempt.status)
        else:
            log.warning("taskgate webhooks: %s %s (attempt %d): %s", delivery.delivery_id, said,
                        delivery.attempts + 1, attempt.error or attempt.status)

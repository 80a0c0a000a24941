"""kombu's Redis transport, with one fault mended: unacked messages on a dead link.

When Redis goes away while a worker holds messages, kombu closes the channel; putting those
messages back (``restore_unacked``), or acknowledging one whose task finished just then
(``ack`` on the closed channel, after the consumer reconnected), goes through a connection
that is already gone, and the ``AttributeError`` it raises stops the worker's consumer for good
("Unrecoverable error") instead of letting it carry on (kombu issues #582, #970 show the same
path). The message is safe where it is, in kombu's ``unacked`` hash in Redis: taskgate's reaper
requeues it once no live worker holds it, and a redelivered task whose record says it ended is
not run again. So this transport logs and leaves it there. Everything else is kombu's; messages
and keys are unchanged, and a plain ``redis://`` worker reads the same queues.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis, virtual

log = logging.getLogger("taskgate.transport")


class QoS(redis.QoS):
    """kombu's Redis QoS whose shutdown restore tolerates a connection that is gone."""

    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except (AttributeError, *self.channel.connection_errors) as exc:
            log.warning("could not requeue %d unacked message(s) while the broker is unreachable "
                        "(%s); they stay in Redis and the reaper requeues them",
                        len(self._delivered), exc)
            self._delivered.clear()

    def ack(self, delivery_tag: Any) -> None:
        try:
            super().ack(delivery_tag)  # type: ignore[no-untyped-call]
        except (AttributeError, *self.channel.connection_errors) as exc:
            log.warning("could not acknowledge a message on a closed channel (%s); it stays in Redis, "
                        "the reaper requeues it and its record keeps it from running twice", exc)
            virtual.QoS.ack(self, delivery_tag)  # type: ignore[no-untyped-call]  # forget it here, as kombu would


class Channel(redis.Channel):
    """kombu's Redis channel with :class:`QoS`."""

    QoS = QoS


class Transport(redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel

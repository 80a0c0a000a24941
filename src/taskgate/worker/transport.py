"""kombu's Redis transport, with one fault mended: restoring unacked messages on a dead link.

When Redis goes away while a worker holds a message whose ack failed, kombu closes the channel
and tries to put that message back through a connection that is already gone; the
``AttributeError`` it raises stops the worker's consumer for good ("Unrecoverable error"),
instead of letting it reconnect (kombu issues #582, #970 show the same path). The message is
safe where it is, in kombu's ``unacked`` hash in Redis: taskgate's reaper requeues it once no
live worker holds it. So this transport logs and leaves it there. Everything else is kombu's;
messages and keys are unchanged, and a plain ``redis://`` worker reads the same queues.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis

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


class Channel(redis.Channel):
    """kombu's Redis channel with :class:`QoS`."""

    QoS = QoS


class Transport(redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel

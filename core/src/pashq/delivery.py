"""The data that crosses the hooks between the core and a driver.

A driver receives :class:`OutgoingMessage` batches to push, returns :class:`Delivery`
batches from a pull, and is handed the same deliveries back to ack, nack, extend or
dead-letter. The body is always the serialized envelope (bytes); drivers never decode it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "DeadLetter",
    "Delivery",
    "MovedMessage",
    "OutgoingMessage",
    "QueueStats",
    "WaitingDelivery",
]


@attrs.define(slots=True)
class OutgoingMessage:
    """One message to push.

    :ivar id: the message id (uuid4 hex), also inside the envelope.
    :ivar type_name: the registered type name, also inside the envelope.
    :ivar body: the serialized envelope.
    :ivar delay: seconds before the message may be delivered (0 = at once).
    :ivar group_id: ordering group for FIFO-capable backends (``None`` = none).
    :ivar deduplication_id: deduplication key for backends that support one.
    :ivar priority: 0 to 9, higher first, for drivers with the ``priorities`` capability
        (always 0 for the others: the core refuses a priority they cannot honour).
    :ivar unique_key: the coordination key of a unique message (``unique_for=``), or
        ``None``; drivers other than ``pashq_push_unique`` implementations ignore it.
    :ivar unique_for: seconds the key is held at most.
    """

    id: str
    type_name: str
    body: bytes
    delay: float = 0.0
    group_id: str | None = None
    deduplication_id: str | None = None
    priority: int = 0
    unique_key: str | None = None
    unique_for: float = 0.0


@attrs.define(slots=True, eq=False)
class Delivery:
    """One message handed to a worker by ``pashq_pull``.

    :ivar queue: the queue it came from.
    :ivar id: the message id (``""`` if the driver cannot know it without decoding).
    :ivar body: the serialized envelope, exactly as pushed.
    :ivar attempts: how many times it has been delivered, this delivery included (>= 1).
    :ivar receipt: the driver's own handle (row id, delivery tag, receipt handle ...); the
        driver may replace it in ``pashq_extend``.
    :ivar lease: seconds the delivery stays reserved from the pull, or ``None`` when the
        backend has no lease (the worker heartbeats through ``pashq_extend`` before it ends).
    :ivar group: the ordering group on FIFO backends: the worker processes deliveries of
        one group one at a time, in pull order, and after a failure hands the rest of the
        group back instead of running them ahead of the retry.
    """

    queue: str
    id: str
    body: bytes
    attempts: int = 1
    receipt: Any = None
    lease: float | None = None
    group: str | None = None


@attrs.frozen(slots=True)
class DeadLetter:
    """A message that failed for good, as kept by the driver.

    :ivar id: the message id.
    :ivar queue: the queue it failed on.
    :ivar body: the serialized envelope.
    :ivar reason: a one-line reason (the exception, ``validate_message() returned False`` ...).
    :ivar traceback: the formatted traceback, if there was one.
    :ivar attempts: deliveries made before it was dead-lettered.
    :ivar failed_at: when it was dead-lettered (UTC), if the backend knows.
    """

    id: str
    queue: str
    body: bytes
    reason: str
    traceback: str | None = None
    attempts: int = 0
    failed_at: datetime | None = None


@attrs.frozen(slots=True)
class QueueStats:
    """Counts for one queue; ``None`` where the backend cannot tell.

    :ivar queue: the queue name.
    :ivar ready: messages waiting to be delivered now.
    :ivar delayed: messages waiting for their delay (or retry backoff) to pass.
    :ivar in_flight: messages delivered and not yet acked.
    :ivar failed: dead letters kept for this queue.
    """

    queue: str
    ready: int | None = None
    delayed: int | None = None
    in_flight: int | None = None
    failed: int | None = None


@attrs.frozen(slots=True)
class WaitingDelivery:
    """A message reserved by ``pashq_claim_waiting``, due or not (for ``pashq move``).

    :ivar delivery: the reservation, settled with ``pashq_ack`` like any delivery.
    :ivar due_in: seconds until the message is due (0 when it is ready now).
    """

    delivery: Delivery
    due_in: float = 0.0


@attrs.frozen(slots=True)
class MovedMessage:
    """A message moved from another connection, for ``pashq_push_moved``.

    :ivar message: what to store (id, body, ``delay`` = seconds until it is due).
    :ivar attempts: deliveries it already had (0 = never delivered): the next delivery
        from the destination counts ``attempts + 1``.
    """

    message: OutgoingMessage
    attempts: int = 0

"""Sending a message back over a limit without counting the attempt.

Drivers with ``pashq_defer`` (capability ``defer``) do it themselves. For the others
(RabbitMQ, SQS: the broker's delivery count cannot be undone) the worker pushes a copy of
the delivery's bytes (the same envelope: id, body, headers) with the delay, then acks the
delivery: the copy starts with a fresh delivery count. Both steps keep the message:
if the ack fails the message is delivered twice, never lost. A copy of a grouped (FIFO)
delivery gets a deduplication id of its own: a FIFO queue would otherwise drop it as a
repeat of the message it copies, and the ack would then lose the message.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from pashq.delivery import Delivery, OutgoingMessage

__all__ = ["defer"]


def defer(hook: Any, queue: str, deliveries: Sequence[Delivery], delay: float) -> None:
    """Release ``deliveries`` for ``delay`` seconds without counting this delivery."""
    if hook.pashq_defer.get_hookimpls():
        hook.pashq_defer(queue=queue, deliveries=deliveries, delay=delay)
        return
    copies = [
        OutgoingMessage(
            d.id,
            _type_of(d.body),
            d.body,
            delay,
            d.group,
            deduplication_id=None if d.group is None else f"{d.id}-deferred-{uuid.uuid4().hex}",
        )
        for d in deliveries
    ]
    hook.pashq_push(queue=queue, messages=copies, options={})
    hook.pashq_ack(queue=queue, deliveries=deliveries)


def _type_of(body: bytes) -> str:
    """The envelope's type name for the driver's metadata ("" when not plain JSON)."""
    try:
        found = json.loads(body).get("type")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return ""
    return found if isinstance(found, str) else ""

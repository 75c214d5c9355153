"""What the driver declares on the broker, and the headers it writes.

For a queue ``jobs`` (durable, ``x-queue-type`` from ``queue_type``):

- ``jobs``: the work queue; messages are published to it through the default exchange.
  A classic work queue gets ``x-max-priority = max_priority`` (9 by default, none with
  ``max_priority = 0``): the broker delivers higher AMQP ``priority`` first. A quorum
  queue gets none: RabbitMQ 3.x refuses the argument on quorum queues
  (``PRECONDITION_FAILED - invalid arg 'x-max-priority'``).
- ``jobs.failed``: dead letters (same queue type, no priorities: it is browsed, never
  consumed in order), with the headers described in
  :mod:`pashq_rabbitmq.properties`.
- ``jobs.delay.<ms>``: one classic queue per delay (rounded up to two significant digits of
  milliseconds), with ``x-message-ttl = ms``, ``x-dead-letter-exchange = ""`` and
  ``x-dead-letter-routing-key = jobs``: the broker holds a delayed message and moves it to
  ``jobs`` when due. Unused delay queues expire (``x-expires``) a minute after their TTL.

Queue names are AMQP short strings (at most 255 bytes of UTF-8). The longest name the
driver derives is the delay queue of the longest delay (``jobs.delay.2100000000``, 17
bytes more), so a queue name may have at most :data:`MAX_QUEUE_NAME_BYTES` = 238 bytes;
names starting with ``amq.`` are reserved by RabbitMQ (see :func:`queue_name_problem`).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = [
    "MAX_DELAY",
    "MAX_QUEUE_NAME_BYTES",
    "delay_arguments",
    "delay_milliseconds",
    "delay_queue",
    "expiry_refresh_seconds",
    "failed_queue",
    "has_priorities",
    "queue_arguments",
    "queue_name_problem",
    "work_queue_arguments",
]

#: Delay queues expire this long after their TTL when unused.
_EXPIRY_MARGIN_MS = 60_000
#: The longest delay: TTL plus the expiry margin must stay below 2**31 ms.
MAX_DELAY = 24 * 86_400.0


def failed_queue(queue: str) -> str:
    """Return the name of the dead-letter queue of ``queue``."""
    return f"{queue}.failed"


def delay_milliseconds(seconds: float) -> int:
    """Round a delay up to whole milliseconds with at most two significant digits.

    Rounding keeps the number of delay queues small (retry backoff with jitter produces
    arbitrary delays) at a cost of at most ~10% more delay; 0 means "no delay".
    """
    ms = math.ceil(seconds * 1000 - 1e-6)
    if ms <= 0:
        return 0
    if ms >= 100:
        step = 10 ** (len(str(ms)) - 2)
        ms = -(-ms // step) * step
    return ms


def delay_queue(queue: str, ms: int) -> str:
    """Return the name of the delay queue of ``queue`` for ``ms`` milliseconds."""
    return f"{queue}.delay.{ms}"


def queue_arguments(queue_type: str) -> dict[str, Any] | None:
    """Return the declare arguments of a failed queue (and the base of a work queue's)."""
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else None


def has_priorities(queue_type: str, max_priority: int) -> bool:
    """Whether work queues of this type get ``x-max-priority`` (classic queues only)."""
    return queue_type == "classic" and max_priority > 0


def work_queue_arguments(queue_type: str, max_priority: int) -> dict[str, Any] | None:
    """Return the declare arguments of a work queue: :func:`queue_arguments` plus
    ``x-max-priority`` where :func:`has_priorities`."""
    if has_priorities(queue_type, max_priority):
        return {"x-max-priority": max_priority}
    return queue_arguments(queue_type)


def delay_arguments(queue: str, ms: int) -> dict[str, Any]:
    """Return the declare arguments of the delay queue of ``queue`` for ``ms`` ms."""
    return {
        "x-message-ttl": ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-expires": ms + _EXPIRY_MARGIN_MS,
    }


def expiry_refresh_seconds() -> float:
    """Seconds after which a delay queue is declared again before publishing to it.

    Publishing does not count as use for ``x-expires``; declaring does. Declaring at least
    this often keeps a delay queue alive until its last message is due.
    """
    return _EXPIRY_MARGIN_MS / 2000


#: AMQP's limit for a queue name (a short string), in bytes of UTF-8.
_AMQP_NAME_BYTES = 255
#: The longest suffix the driver adds to a queue name: the delay queue of MAX_DELAY.
_LONGEST_SUFFIX = len(delay_queue("", delay_milliseconds(MAX_DELAY)))
#: The longest queue name (bytes of UTF-8) whose failed and delay queues RabbitMQ accepts.
MAX_QUEUE_NAME_BYTES = _AMQP_NAME_BYTES - _LONGEST_SUFFIX


def queue_name_problem(queue: str) -> str | None:
    """Say why RabbitMQ would refuse ``queue`` or a queue derived from it, else ``None``."""
    try:
        size = len(queue.encode("utf-8"))
    except UnicodeEncodeError:
        return "cannot be encoded as UTF-8 (it holds a lone surrogate); AMQP names are UTF-8"
    if size > MAX_QUEUE_NAME_BYTES:
        return (
            f"is {size} bytes long in UTF-8; the most is {MAX_QUEUE_NAME_BYTES} (AMQP allows "
            f"{_AMQP_NAME_BYTES} bytes, and the driver adds up to {_LONGEST_SUFFIX} for "
            "'<queue>.failed' and '<queue>.delay.<ms>')"
        )
    if queue.startswith("amq."):
        return "starts with 'amq.', which RabbitMQ reserves for its own queues"
    return None

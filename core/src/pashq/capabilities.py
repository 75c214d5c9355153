"""What a driver can do, declared as data.

Each driver class has a ``capabilities`` attribute. The core reads it to decide what to
emulate and what to refuse with :class:`~pashq.errors.UnsupportedError`; the contract
suite reads it to skip tests that do not apply.
"""

from __future__ import annotations

import attrs

__all__ = ["Capabilities"]


@attrs.frozen
class Capabilities:
    """A driver's declared features.

    :ivar persistent: messages survive the process that pushed them.
    :ivar consume: other processes' workers pull the messages (``False`` for the ``sync``,
        ``async`` and ``logger`` drivers, whose messages never reach a queue another
        process can read; ``pashq work`` and ``Worker`` refuse them).
    :ivar delay: ``delay=`` on dispatch is honoured by the backend.
    :ivar max_delay: the longest delay in seconds the backend accepts (``None`` = no limit).
    :ivar batch_size: the most messages the driver moves per backend call; the worker pulls
        at most this many at once.
    :ivar nack_delay: a released message can be made invisible for a while (retry backoff).
    :ivar lease: a pulled message that is never acked comes back by itself (crash recovery).
    :ivar extend_lease: ``pashq_extend`` keeps a long-running delivery reserved.
    :ivar dead_letters: the driver keeps dead letters and implements ``pashq_failed_*``.
    :ivar stats: ``pashq_stats`` is implemented.
    :ivar purge: ``pashq_purge`` is implemented.
    :ivar fifo_groups: ordering groups and deduplication ids are honoured (FIFO queues).
    :ivar priorities: ``dispatch(priority=0..9)`` is honoured (higher first); without it
        the core refuses a priority above 0 with ``UnsupportedError``.
    :ivar coordination: the coordination hooks (``pashq_lock_acquire``,
        ``pashq_lock_release``, ``pashq_lock_extend``, ``pashq_window_add``) are
        implemented: unique messages, rate limits, concurrency caps and schedules can use
        this connection as their store. Others name a store with ``coordination =``.
    :ivar defer: ``pashq_defer`` releases a delivery without counting the attempt.
    """

    persistent: bool = False
    consume: bool = True
    delay: bool = False
    max_delay: float | None = None
    batch_size: int = 100
    nack_delay: bool = False
    lease: bool = False
    extend_lease: bool = False
    dead_letters: bool = False
    stats: bool = False
    purge: bool = False
    fifo_groups: bool = False
    priorities: bool = False
    coordination: bool = False
    defer: bool = False

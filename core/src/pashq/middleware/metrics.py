"""``metrics``: counts what passes through a connection's hooks.

Enable it per connection with ``plugins = ["metrics"]``. It wraps the data-path hooks
(``wrapper=True``), so it works with every driver, and keeps per-queue counters of pushed,
pulled, acked, nacked and dead-lettered messages plus the time spent in each hook::

    plugin = pashq.queue().plugin_manager.get_plugin("pashq.plugin.metrics")
    plugin.snapshot()  # {"default": {"pushed": 10, "pushed_seconds": 0.002, ...}}
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from pashq.delivery import Delivery, OutgoingMessage
from pashq.hookspecs import hookimpl

__all__ = ["MetricsPlugin"]


class MetricsPlugin:
    """Per-queue counters and hook timings, kept in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def _add(self, queue: str, name: str, count: int, seconds: float) -> None:
        with self._lock:
            bucket = self._counts[queue]
            bucket[name] += count
            bucket[f"{name}_seconds"] += seconds

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Return a copy of the counters: queue -> counter -> value."""
        with self._lock:
            return {q: dict(c) for q, c in self._counts.items()}

    @hookimpl(wrapper=True)
    def pashq_push(
        self, queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
    ) -> Generator[None, list[str], list[str]]:
        """Count pushed messages."""
        start = time.perf_counter()
        result = yield
        self._add(queue, "pushed", len(messages), time.perf_counter() - start)
        return result

    @hookimpl(wrapper=True)
    def pashq_pull(
        self, queue: str, max_messages: int, timeout: float
    ) -> Generator[None, list[Delivery], list[Delivery]]:
        """Count pulled messages."""
        start = time.perf_counter()
        result = yield
        self._add(queue, "pulled", len(result or ()), time.perf_counter() - start)
        return result

    @hookimpl(wrapper=True)
    def pashq_ack(self, queue: str, deliveries: Sequence[Delivery]) -> Generator[None, None, None]:
        """Count acked messages."""
        start = time.perf_counter()
        yield
        self._add(queue, "acked", len(deliveries), time.perf_counter() - start)

    @hookimpl(wrapper=True)
    def pashq_nack(
        self, queue: str, deliveries: Sequence[Delivery], delay: float
    ) -> Generator[None, None, None]:
        """Count released messages."""
        start = time.perf_counter()
        yield
        self._add(queue, "nacked", len(deliveries), time.perf_counter() - start)

    @hookimpl(wrapper=True)
    def pashq_dead_letter(
        self, queue: str, delivery: Delivery, reason: str, traceback: str | None
    ) -> Generator[None, None, None]:
        """Count dead-lettered messages."""
        start = time.perf_counter()
        yield
        self._add(queue, "dead_lettered", 1, time.perf_counter() - start)

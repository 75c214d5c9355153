"""The conventions' messaging metrics: sent and consumed message counts, process duration.

Instruments come from the meter provider given to the plugin, else the global one (a
no-op until the application installs the SDK's ``MeterProvider``; the API hands out
proxies that start recording once it does).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

__all__ = ["PROCESS_BUCKETS", "Instruments"]

#: The bucket boundaries the conventions advise for ``messaging.process.duration``.
PROCESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


class Instruments:
    """``messaging.client.sent.messages``, ``messaging.client.consumed.messages`` and
    ``messaging.process.duration`` of one meter."""

    def __init__(self, meter_provider: Any | None, version: str) -> None:
        """:param meter_provider: an ``opentelemetry.metrics.MeterProvider``, or ``None``
        for the global one. :param version: the instrumentation's version."""
        meter = metrics.get_meter("pashq_opentelemetry", version, meter_provider=meter_provider)
        self.sent = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Number of messages producer attempted to send to the broker.",
        )
        # Counted here (a dict increment per delivery) and reported when the SDK collects,
        # through an asynchronous counter: a synchronous add() per message costs more than
        # the rest of a delivery on the memory driver.
        # One dict per thread, updated without a lock; the callback adds them up.
        self._local = threading.local()
        self._per_thread: list[dict[tuple[tuple[str, str], ...], int]] = []
        self._lock = threading.Lock()
        meter.create_observable_counter(
            "messaging.client.consumed.messages",
            callbacks=[self._observe_consumed],
            unit="{message}",
            description="Number of messages that were delivered to the application.",
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Duration of processing operation.",
            explicit_bucket_boundaries_advisory=list(PROCESS_BUCKETS),
        )

    def consumed(self, attributes: tuple[tuple[str, str], ...]) -> None:
        """Count one delivered message with these attributes (sorted key-value pairs)."""
        try:
            counts: dict[tuple[tuple[str, str], ...], int] = self._local.counts
        except AttributeError:
            counts = self._local.counts = {}
            with self._lock:
                self._per_thread.append(counts)
        counts[attributes] = counts.get(attributes, 0) + 1

    def _observe_consumed(self, options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[tuple[tuple[str, str], ...], int] = {}
        with self._lock:
            per_thread = list(self._per_thread)
        for counts in per_thread:
            for attributes, count in list(counts.items()):  # a whole copy under the GIL
                totals[attributes] = totals.get(attributes, 0) + count
        return [Observation(count, dict(attributes)) for attributes, count in totals.items()]

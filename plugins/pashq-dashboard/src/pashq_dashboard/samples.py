"""The dashboard's own samples of queue counts, for the overview's chart and rates.

The hooks give counts, not totals of processed messages, so the chart shows each queue's
backlog (ready + delayed + in flight) over the samples taken, and the rate is the net
change per second between the last two samples: negative while workers drain the queue
faster than producers fill it.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import attrs

__all__ = ["Chart", "Sampler"]


@attrs.frozen
class Chart:
    """A sparkline: SVG polyline points in a ``width`` x ``height`` box, and the rate."""

    points: str
    width: int
    height: int
    latest: int
    peak: int
    rate: float | None

    @property
    def rate_text(self) -> str:
        """``-12.5/s``, ``+3/s``, ``0/s`` or ``-`` with fewer than two samples."""
        if self.rate is None:
            return "-"
        if abs(self.rate) < 0.05:
            return "0/s"
        return f"{self.rate:+.1f}/s" if abs(self.rate) < 100 else f"{self.rate:+,.0f}/s"


class Sampler:
    """Keeps the last ``keep`` samples of each (connection, queue), at most one per
    ``min_interval`` seconds (a page refreshed faster does not crowd the chart)."""

    def __init__(self, keep: int = 60, min_interval: float = 1.0) -> None:
        self.keep = keep
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], deque[tuple[float, int]]] = {}

    def record(self, connection: str, queue: str, waiting: int, now: float | None = None) -> None:
        """Add a sample of the backlog of ``queue``."""
        at = time.monotonic() if now is None else now
        with self._lock:
            series = self._series.setdefault((connection, queue), deque(maxlen=self.keep))
            if series and at - series[-1][0] < self.min_interval:
                series[-1] = (series[-1][0], waiting)  # keep the time, refresh the value
                return
            series.append((at, waiting))

    def chart(self, connection: str, queue: str, width: int = 120, height: int = 24) -> Chart:
        """The sparkline of ``queue``'s samples (flat at the bottom with none)."""
        with self._lock:
            series = list(self._series.get((connection, queue), ()))
        if not series:
            return Chart(f"0,{height} {width},{height}", width, height, 0, 0, None)
        peak = max(v for _, v in series)
        span = max(series[-1][0] - series[0][0], 1e-9)
        start = series[0][0]
        points = []
        for at, value in series:
            x = 0.0 if len(series) == 1 else (at - start) / span * width
            y = height - (value / peak * (height - 2) if peak else 0.0)
            points.append(f"{x:.1f},{y:.1f}")
        if len(series) == 1:
            points.append(f"{width},{points[0].split(',')[1]}")
        rate = None
        if len(series) >= 2:
            (t0, v0), (t1, v1) = series[-2], series[-1]
            rate = (v1 - v0) / max(t1 - t0, 1e-9)
        return Chart(" ".join(points), width, height, series[-1][1], peak, rate)

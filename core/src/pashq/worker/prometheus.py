"""Prometheus metrics of a worker process: ``pashq work --metrics-port PORT``.

:class:`WorkerMetrics` is a delivery observer (``pashq_delivery_observer``) that counts
each delivery by queue, type and outcome and times it, and a prometheus-client collector
that turns those counts, the deliveries in flight and the queue depths (sampled from the
driver's stats every ``interval`` seconds, so an idle worker does not keep asking the
backend) into metrics at scrape time. :func:`serve_metrics` registers it on a connection
and serves ``/metrics``.

Needs prometheus-client: ``pip install 'pashq[prometheus]'``.
"""

from __future__ import annotations

import bisect
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pashq.delivery import Delivery
from pashq.envelope import Envelope
from pashq.errors import ConfigError, PashqError
from pashq.hookspecs import hookimpl
from pashq.processing import Outcome, Result

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

    from pashq.connection import Connection

__all__ = ["DURATION_BUCKETS", "MetricsServer", "WorkerMetrics", "serve_metrics"]

log = logging.getLogger("pashq.worker.prometheus")

#: Seconds; the bucket boundaries OpenTelemetry advises for ``messaging.process.duration``.
DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
_OUTCOME_NAMES = ("ack", "retry", "dead_letter")
_ACK, _RETRY, _DEAD = Outcome.ACK, Outcome.RETRY, Outcome.DEAD
_FIRST_BUCKET = len(_OUTCOME_NAMES)
_ROW_LENGTH = _FIRST_BUCKET + len(DURATION_BUCKETS) + 2
_NO_TYPE = "(unknown)"  # undecodable bytes or an unregistered type
_STATES = ("ready", "in_flight", "delayed", "failed")


def _prometheus_client() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigError(
            "--metrics-port needs prometheus-client, which is not installed: "
            "pip install 'pashq[prometheus]'"
        ) from exc
    return prometheus_client


class WorkerMetrics:
    """Counts and times every delivery a worker handles; a prometheus-client collector.

    :param connection: the worker's connection.
    :param queues: the queues it consumes (their depths are sampled).
    :param interval: seconds between two samples of the queue depths.
    """

    def __init__(self, connection: Connection, queues: Sequence[str], interval: float) -> None:
        self.connection = connection
        self.queues = list(queues)
        self.interval = interval
        self.started_at = time.time()
        self._lock = threading.Lock()
        #: Per thread, (queue, type) -> [ack, retry, dead_letter counts, count per duration
        #: bucket (not cumulative)..., +Inf bucket, sum of durations]. Each handler thread
        #: updates its own rows without a lock; a scrape adds up every thread's.
        self._local = threading.local()
        self._thread_rows: list[dict[tuple[str, str], list[float]]] = []
        #: deliveries being processed (set.add and set.discard are atomic: no lock needed)
        self._running: set[Delivery] = set()
        self._depths: dict[str, dict[str, int]] = {}
        self._stats_errors = 0
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    # -- counting ---------------------------------------------------------------------------

    @hookimpl
    def pashq_delivery_observer(self) -> WorkerMetrics:
        """Watch every delivery (cheaper than a ``pashq_process`` wrapper)."""
        return self

    def started(self, delivery: Delivery) -> None:
        """Count the delivery in flight."""
        self._running.add(delivery)

    def finished(
        self, delivery: Delivery, envelope: Envelope | None, result: Result | None, seconds: float
    ) -> None:
        """Count the delivery by outcome and time it (``result`` ``None``: interrupted)."""
        self._running.discard(delivery)
        if result is None:
            return
        key = (delivery.queue, envelope.type if envelope is not None else _NO_TYPE)
        outcome = result.outcome  # identity tests: an Enum's hash runs Python code
        column = 0 if outcome is _ACK else 1 if outcome is _RETRY else 2 if outcome is _DEAD else -1
        try:
            rows: dict[tuple[str, str], list[float]] = self._local.rows
        except AttributeError:
            rows = self._local.rows = {}
            with self._lock:
                self._thread_rows.append(rows)
        row = rows.get(key)
        if row is None:
            row = rows[key] = [0.0] * _ROW_LENGTH
        if column >= 0:
            row[column] += 1
        row[_FIRST_BUCKET + bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        row[-1] += seconds

    # -- queue depths -----------------------------------------------------------------------

    def sample(self) -> None:
        """Read the depth of every queue from the driver's stats once."""
        if not self.connection.capabilities.stats:
            return
        for queue in self.queues:
            try:
                stats = self.connection.stats(queue)
            except Exception as exc:
                with self._lock:
                    self._stats_errors += 1
                log.warning("queue stats of %r failed: %s: %s", queue, type(exc).__name__, exc)
                continue
            depths = {s: v for s in _STATES if (v := getattr(stats, s)) is not None}
            with self._lock:
                self._depths[queue] = depths

    def _sample_loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def start_sampling(self) -> None:
        """Sample the queue depths now and then every ``interval`` seconds, in a thread."""
        if self._sampler is None and self.connection.capabilities.stats:
            self._sampler = threading.Thread(
                target=self._sample_loop, name="pashq-metrics-sampler", daemon=True
            )
            self._sampler.start()

    def stop_sampling(self) -> None:
        """Stop the sampling thread."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)

    # -- the collector ----------------------------------------------------------------------

    def collect(self) -> Iterator[Any]:
        """Build the metric families (called by prometheus-client at each scrape)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        rows: dict[tuple[str, str], list[float]] = {}
        with self._lock:
            thread_rows = list(self._thread_rows)
            running = list(self._running)
            depths = {q: dict(d) for q, d in self._depths.items()}
            stats_errors = self._stats_errors
        for per_thread in thread_rows:
            # list() of a dict, and of a list of floats, copies it whole under the GIL.
            for key, row in list(per_thread.items()):
                total = rows.get(key)
                if total is None:
                    rows[key] = list(row)
                else:
                    rows[key] = [a + b for a, b in zip(total, list(row), strict=True)]
        counter = CounterMetricFamily(
            "pashq_messages_handled",
            "Deliveries handled, by queue, message type and outcome (ack, retry, dead_letter).",
            labels=["queue", "type", "outcome"],
        )
        for (queue, kind), row in sorted(rows.items()):
            for outcome, count in zip(_OUTCOME_NAMES, row, strict=False):
                if count:
                    counter.add_metric([queue, kind, outcome], count)
        yield counter
        histogram = HistogramMetricFamily(
            "pashq_message_process_duration_seconds",
            "Seconds a delivery took to validate, process and decide, by queue and type.",
            labels=["queue", "type"],
        )
        bounds: tuple[float, ...] = (*DURATION_BUCKETS, float("inf"))
        for (queue, kind), row in sorted(rows.items()):
            cumulative, buckets = 0.0, []
            for bound, in_bucket in zip(bounds, row[_FIRST_BUCKET:-1], strict=True):
                cumulative += in_bucket
                buckets.append((_le(bound), cumulative))
            histogram.add_metric([queue, kind], buckets, sum_value=row[-1])
        yield histogram
        gauge = GaugeMetricFamily(
            "pashq_messages_in_flight",
            "Deliveries being processed by this worker now, by queue.",
            labels=["queue"],
        )
        in_flight = dict.fromkeys(self.queues, 0)
        for delivery in running:
            in_flight[delivery.queue] = in_flight.get(delivery.queue, 0) + 1
        for queue, count in in_flight.items():
            gauge.add_metric([queue], count)
        yield gauge
        depth = GaugeMetricFamily(
            "pashq_queue_messages",
            "Messages in the queue by state (ready, in_flight, delayed, failed), from the "
            "driver's stats, sampled every --metrics-interval seconds.",
            labels=["queue", "state"],
        )
        for queue, states in sorted(depths.items()):
            for state, value in states.items():
                depth.add_metric([queue, state], value)
        yield depth
        yield CounterMetricFamily(
            "pashq_queue_stats_errors",
            "Samples of the queue depths that failed.",
            value=stats_errors,
        )
        from pashq import __version__

        info = InfoMetricFamily("pashq_worker", "The worker process.")
        info.add_metric(
            [],
            {
                "connection": self.connection.name,
                "driver": self.connection.config.type,
                "queues": ",".join(self.queues),
                "version": __version__,
                "hostname": socket.gethostname(),
                "pid": str(os.getpid()),
            },
        )
        yield info
        yield GaugeMetricFamily(
            "pashq_worker_start_time_seconds",
            "When the worker started, in seconds since the Unix epoch.",
            value=self.started_at,
        )


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class MetricsServer:
    """The ``/metrics`` HTTP server of a worker and its :class:`WorkerMetrics`.

    :ivar metrics: what it serves. :ivar host: the address it listens on.
    :ivar port: the port it listens on (the one chosen when 0 was asked for).
    """

    def __init__(self, metrics: WorkerMetrics, httpd: Any, registry: CollectorRegistry) -> None:
        self.metrics = metrics
        self.registry = registry
        self._httpd = httpd
        self.host: str = httpd.server_address[0]
        self.port: int = httpd.server_port

    @property
    def url(self) -> str:
        """``http://HOST:PORT/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and sampling."""
        self.metrics.stop_sampling()
        self._httpd.shutdown()
        self._httpd.server_close()


def serve_metrics(
    connection: Connection,
    queues: Sequence[str],
    *,
    port: int,
    host: str = "127.0.0.1",
    interval: float = 15.0,
) -> MetricsServer:
    """Register :class:`WorkerMetrics` on ``connection`` and serve it on ``host:port``.

    Call it before ``Worker.run()`` (the worker asks for its delivery observers when a
    run starts). Port 0 picks a free port (``server.port`` says which).

    :raises ConfigError: prometheus-client is not installed.
    :raises PashqError: the port cannot be listened on.
    """
    client = _prometheus_client()
    metrics = WorkerMetrics(connection, queues, interval)
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    try:
        httpd, _thread = client.start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise PashqError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
            "(choose another --metrics-port, or --metrics-host)"
        ) from exc
    connection.plugin_manager.register(metrics, name="pashq.worker.prometheus")
    metrics.start_sampling()
    return MetricsServer(metrics, httpd, registry)

"""What observability costs on the memory driver (issue 12): the drain with the
``opentelemetry`` plugin (OpenTelemetry SDK, no-op exporters) and with ``--metrics-port``
(Prometheus), against the same drain without either.

Cases (each run in a fresh subprocess; ``bench/bench_memory.py``'s workload: 20,000
messages dispatched with ``dispatch_many``, then ``Worker.run(until_empty=True)``, three
times per process, the fastest of the three counting):

- ``pashq memory``: no plugin (the baseline);
- ``opentelemetry, API only``: the plugin with no SDK installed (what it costs when the
  application has not configured OpenTelemetry);
- ``opentelemetry, SDK + no-op exporter``: the SDK's ``TracerProvider`` with a
  ``BatchSpanProcessor`` and a ``MeterProvider`` with a periodic reader, both exporting to
  exporters that drop everything;
- ``prometheus (--metrics-port)``: :func:`pashq.worker.prometheus.serve_metrics` on a free
  port, as ``pashq work --metrics-port 0`` does.

The cases run interleaved, ``--rounds`` times (case 1, 2, 3, 4, then again), and each
round's rates are divided by that round's baseline, so a machine shared with other work
slows the cases of one round alike; the table shows the medians of those ratios. Issue 12
asks for >= 0.5x with the SDK and >= 0.9x with ``--metrics-port``.

After the table it prints what a delivery costs in the baseline and, measured bare, what the
SDK case adds per delivery (a span with the plugin's attributes, a histogram record, a
trace-context extraction), which bounds what the plugin can reach on this driver.

    python bench/bench_observability.py [--rounds 7] [-n 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_memory import InvoicePaid, consumed
from harness import Phases, Timer, main, payload, run_child

import pashq

_TRIES = 3  # drains per process


def _drain(n: int, setup: Callable[[pashq.Connection], object] | None = None) -> Phases:
    """Dispatch and drain ``n`` messages ``_TRIES`` times on one connection; the fastest
    of each phase counts (a shared machine slows some tries, never speeds one up)."""
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    connection = pashq.queue()
    if setup is not None:
        setup(connection)
    publish, consume = [], []
    for _ in range(_TRIES):
        consumed.clear()
        messages = [InvoicePaid(**payload(i)) for i in range(n)]  # type: ignore[arg-type]
        with Timer() as pub:
            connection.dispatch_many("bench", messages)
        worker = pashq.Worker("bench", poll_timeout=0.05, install_signal_handlers=False)
        with Timer() as con:
            worker.run(until_empty=True)
        publish.append(pub.seconds)
        consume.append(con.seconds - 0.05)
    return Phases(min(publish), min(consume), list(consumed))


def baseline(n: int) -> Phases:
    return _drain(n)


def otel_api_only(n: int) -> Phases:
    from pashq_opentelemetry import OpenTelemetryPlugin

    return _drain(
        n, lambda c: c.plugin_manager.register(OpenTelemetryPlugin(system="pashq.memory"))
    )


def _install_sdk() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class NoOpSpans(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class NoOpMetrics(MetricExporter):
        def export(
            self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            pass

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(NoOpSpans()))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(NoOpMetrics(), export_interval_millis=1_000)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


def otel_sdk(n: int) -> Phases:
    from pashq_opentelemetry import OpenTelemetryPlugin

    _install_sdk()
    return _drain(
        n, lambda c: c.plugin_manager.register(OpenTelemetryPlugin(system="pashq.memory"))
    )


def prometheus(n: int) -> Phases:
    from pashq.worker.prometheus import serve_metrics

    return _drain(n, lambda c: serve_metrics(c, ["bench"], port=0))


CASES: dict[str, Callable[[int], Phases]] = {
    "pashq memory": baseline,
    "opentelemetry, API only": otel_api_only,
    "opentelemetry, SDK + no-op exporter": otel_sdk,
    "prometheus (--metrics-port)": prometheus,
}


def sdk_floor(n: int = 20_000) -> dict[str, float]:
    """Microseconds per call, measured bare (best of five loops of ``n``): a no-op
    ``pashq_process`` wrapper and the Prometheus delivery observer driven through one
    delivery, and what the SDK case
    adds per delivery (a span started and ended with the plugin's attributes, a histogram
    record, a trace-context extraction)."""
    import time

    from opentelemetry import metrics, propagate, trace
    from opentelemetry.trace import SpanKind

    _install_sdk()
    tracer = trace.get_tracer("floor")
    histogram = metrics.get_meter("floor").create_histogram("floor")
    attributes: dict[str, Any] = {
        "messaging.system": "pashq.memory",
        "messaging.destination.name": "bench",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.message.id": "0" * 32,
        "pashq.attempt": 1,
        "pashq.message.type": "bench.invoice_paid",
    }
    metric_attributes = {k: attributes[k] for k in list(attributes)[:4]}
    headers: dict[str, str] = {}
    with tracer.start_as_current_span("producer"):
        propagate.inject(headers)

    def best(call: Callable[[], object]) -> float:
        times = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                call()
            times.append((time.perf_counter() - start) / n * 1e6)
        return min(times)

    def span() -> None:
        tracer.start_span("process bench", kind=SpanKind.CONSUMER, attributes=attributes).end()

    from pashq.delivery import Delivery
    from pashq.envelope import Envelope
    from pashq.processing import Outcome, Result
    from pashq.worker.prometheus import WorkerMetrics

    pashq.configure({"queues": {"default": {"type": "memory"}}})
    prometheus_plugin = WorkerMetrics(pashq.queue(), ["bench"], 15.0)
    delivery = Delivery("bench", "0" * 32, b"{}")
    envelope = Envelope("0" * 32, "bench.invoice_paid", {}, "2026-12-01T00:00:00.000000Z", {})
    result = Result(delivery, Outcome.ACK)

    def no_op(delivery: Any, envelope: Any, message: Any) -> Any:
        return (yield)

    def through(wrapper: Callable[..., Any]) -> Callable[[], None]:
        def call() -> None:
            gen = wrapper(delivery, envelope, None)
            next(gen)
            with contextlib.suppress(StopIteration):
                gen.send(result)

        return call

    def observed() -> None:
        prometheus_plugin.started(delivery)
        prometheus_plugin.finished(delivery, envelope, result, 0.001)

    return {
        "no-op pashq_process wrapper, one delivery": best(through(no_op)),
        "Prometheus delivery observer (started + finished), one delivery": best(observed),
        "SDK span start + end, 7 attributes": best(span),
        "SDK histogram record": best(lambda: histogram.record(0.001, metric_attributes)),
        "trace context extract": best(lambda: propagate.extract(headers)),
    }


def _child_run(name: str, n: int) -> dict[str, Any]:
    failures: list[str] = []
    run = run_child(name, n, failures)
    if run is None:
        raise SystemExit(failures[0])
    return run


def interleaved(rounds: int, n: int) -> None:
    """Run every case once per round, in order, and print the medians of the ratios."""
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for round_no in range(rounds):
        for name in CASES:
            run = _child_run(name, n)
            rates[name].append((n / run["publish"], n / run["consume"]))
            print(
                f"  round {round_no + 1} {name}: publish {rates[name][-1][0]:,.0f}/s, "
                f"consume {rates[name][-1][1]:,.0f}/s",
                file=sys.stderr,
                flush=True,
            )
    base = rates["pashq memory"]
    print(
        f"\npashq observability overhead on the memory driver — N = {n:,}, {rounds} rounds, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| case | publish msg/s | consume msg/s | publish ratio | consume ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, runs in rates.items():
        pub = statistics.median(r[0] for r in runs)
        con = statistics.median(r[1] for r in runs)
        pub_ratio = statistics.median(r[0] / b[0] for r, b in zip(runs, base, strict=True))
        con_ratio = statistics.median(r[1] / b[1] for r, b in zip(runs, base, strict=True))
        print(f"| {name} | {pub:,.0f} | {con:,.0f} | {pub_ratio:.2f}x | {con_ratio:.2f}x |")
    floor = subprocess.run(
        [sys.executable, sys.argv[0], "--floor"], capture_output=True, text=True, check=True
    )
    base_us = 1e6 / statistics.median(r[1] for r in base)
    print(f"\nper delivery, pashq memory (median consume): {base_us:.1f} us")
    print(floor.stdout, end="")


if __name__ == "__main__":
    if "--child" in sys.argv:
        main(CASES, default_n=20_000, title="pashq observability overhead")
    elif "--floor" in sys.argv:
        for what, micros in sdk_floor().items():
            print(f"{what}: {micros:.1f} us")
    else:
        parser = argparse.ArgumentParser(description="pashq observability overhead")
        parser.add_argument("-n", type=int, default=20_000, help="messages per run")
        parser.add_argument("--rounds", type=int, default=5, help="rounds of every case")
        args = parser.parse_args()
        interleaved(args.rounds, args.n)

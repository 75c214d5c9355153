"""The ``opentelemetry`` plugin in one process on the memory driver: batch dispatch spans,
failed pushes, the conventions' metrics and the ``messaging.system`` of each driver."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from otel_messages import AlwaysFails, FailsTwice, Fine

import pashq
from pashq import OutgoingMessage, hookimpl
from pashq.errors import DriverError
from pashq_opentelemetry import OpenTelemetryPlugin, messaging_system

_handler_tracer: list[Any] = []


@attrs.define
class Traced(pashq.Message, type_name="pashq_tests.otel.traced"):
    """Opens a span of its own in its handler."""

    def process_message(self) -> None:
        """One span, on the tracer the test put in ``_handler_tracer``."""
        with _handler_tracer[-1].start_as_current_span("charge card"):
            pass


@attrs.define
class TracedAsync(pashq.Message, type_name="pashq_tests.otel.traced_async"):
    """An ``async def`` handler that opens a span across an ``await``."""

    n: int

    async def process_message(self) -> None:
        """One span named after the message, around a sleep."""
        with _handler_tracer[-1].start_as_current_span(f"handler {self.n}"):
            await asyncio.sleep(0.01)


@attrs.define
class Chained(pashq.Message, type_name="pashq_tests.otel.chained"):
    """Dispatches a :class:`Fine` from its handler."""

    def process_message(self) -> None:
        """Send the follow-up message on the same connection."""
        pashq.queue().dispatch("orders", Fine(99))


class Telemetry:
    """An SDK tracer provider and meter provider of one test, with in-memory export."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> its data points."""
        found: dict[str, list[Any]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    found = Telemetry()
    yield found
    found.tracer_provider.shutdown()
    found.meter_provider.shutdown()


def _traced(telemetry: Telemetry, **options: Any) -> pashq.Connection:
    """The memory connection with the plugin on this test's providers."""
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    conn = pashq.queue()
    conn.plugin_manager.register(
        OpenTelemetryPlugin(
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
            system="pashq.memory",
            **options,
        )
    )
    return conn


@pytest.fixture
def connection(telemetry: Telemetry) -> pashq.Connection:
    return _traced(telemetry)


@pytest.fixture
def with_create_spans(telemetry: Telemetry) -> pashq.Connection:
    """A connection whose plugin opens a ``create`` span per message of a batch."""
    return _traced(telemetry, create_spans=True)


def test_batch_dispatch_has_one_send_span_whose_context_every_message_carries(
    connection: pashq.Connection, telemetry: Telemetry
) -> None:
    connection.dispatch_many("orders", [Fine(1), Fine(2), Fine(3)])
    [send] = telemetry.spans.get_finished_spans()
    assert send.name == "send orders"
    assert send.kind is SpanKind.PRODUCER  # its context is the messages' creation context
    assert send.attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in send.attributes
    pashq.Worker("orders", connection=connection, install_signal_handlers=False).run(
        until_empty=True
    )
    processes = [s for s in telemetry.spans.get_finished_spans() if s.name == "process orders"]
    assert len(processes) == 3
    assert {p.parent.span_id for p in processes} == {send.context.span_id}
    assert {p.context.trace_id for p in processes} == {send.context.trace_id}


def test_deliveries_of_two_batches_continue_their_own_batchs_trace(
    connection: pashq.Connection, telemetry: Telemetry
) -> None:
    connection.dispatch_many("orders", [Fine(1), Fine(2)])
    connection.dispatch_many("orders", [Fine(3), Fine(4)])
    pashq.Worker("orders", connection=connection, install_signal_handlers=False).run(
        until_empty=True
    )
    spans = telemetry.spans.get_finished_spans()
    first, second = [s for s in spans if s.name == "send orders"]
    parents = [s.parent.span_id for s in spans if s.name == "process orders"]
    assert parents == [first.context.span_id] * 2 + [second.context.span_id] * 2


def test_batch_dispatch_has_a_create_span_per_message_and_one_linked_send_span(
    with_create_spans: pashq.Connection, telemetry: Telemetry
) -> None:
    connection = with_create_spans
    ids = connection.dispatch_many("orders", [Fine(1), Fine(2), Fine(3)])
    spans = telemetry.spans.get_finished_spans()
    creates = [s for s in spans if s.name == "create orders"]
    [send] = [s for s in spans if s.name == "send orders"]
    assert [s.attributes["messaging.message.id"] for s in creates] == ids
    assert {s.kind for s in creates} == {SpanKind.PRODUCER}
    assert send.kind is SpanKind.CLIENT
    assert send.attributes["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in send.attributes
    assert [link.context.span_id for link in send.links] == [s.context.span_id for s in creates]


def test_each_message_of_a_batch_carries_its_own_create_spans_context(
    with_create_spans: pashq.Connection, telemetry: Telemetry
) -> None:
    connection = with_create_spans
    connection.dispatch_many("orders", [Fine(1), Fine(2)])
    pashq.Worker("orders", connection=connection, install_signal_handlers=False).run(
        until_empty=True
    )
    spans = telemetry.spans.get_finished_spans()
    creates = {
        s.attributes["messaging.message.id"]: s for s in spans if s.kind is SpanKind.PRODUCER
    }
    processes = [s for s in spans if s.name == "process orders"]
    assert len(processes) == 2
    for process in processes:
        create = creates[process.attributes["messaging.message.id"]]
        assert process.parent.span_id == create.context.span_id
        assert process.context.trace_id == create.context.trace_id


def test_handler_spans_are_children_of_the_process_span(
    connection: pashq.Connection, telemetry: Telemetry
) -> None:
    _handler_tracer.append(telemetry.tracer_provider.get_tracer("handler"))
    connection.dispatch("orders", Traced())
    pashq.Worker("orders", connection=connection, install_signal_handlers=False).run(
        until_empty=True
    )
    spans = {s.name: s for s in telemetry.spans.get_finished_spans()}
    assert spans["charge card"].parent.span_id == spans["process orders"].context.span_id


def test_failed_push_marks_the_send_span_as_an_error(
    connection: pashq.Connection, telemetry: Telemetry
) -> None:
    class Down:
        @hookimpl(tryfirst=True)
        def pashq_push(self) -> list[str]:
            raise DriverError("backend down")

    connection.plugin_manager.register(Down())
    with pytest.raises(DriverError):
        connection.dispatch("orders", Fine(1))
    [send] = telemetry.spans.get_finished_spans()
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes["error.type"] == "pashq.errors.DriverError"
    assert [e.name for e in send.events] == ["exception"]
    [sent] = telemetry.metrics()["messaging.client.sent.messages"]
    assert sent.value == 1
    assert sent.attributes["error.type"] == "pashq.errors.DriverError"


def test_metrics_count_sent_and_consumed_messages_and_time_processing(
    connection: pashq.Connection, telemetry: Telemetry
) -> None:
    connection.dispatch_many("orders", [Fine(1), Fine(2)])
    connection.dispatch("orders", FailsTwice(3))
    connection.dispatch("orders", AlwaysFails(4))
    stats = pashq.Worker("orders", connection=connection, install_signal_handlers=False).run(
        until_empty=True
    )
    assert (stats.acked, stats.retried, stats.dead_lettered) == (3, 3, 1)
    metrics = telemetry.metrics()
    [sent] = metrics["messaging.client.sent.messages"]
    assert sent.value == 4
    assert sent.attributes == {
        "messaging.operation.name": "send",
        "messaging.system": "pashq.memory",
        "messaging.destination.name": "orders",
    }
    [consumed] = metrics["messaging.client.consumed.messages"]
    assert consumed.value == 7  # 2 + 3 + 2 deliveries
    durations = {p.attributes.get("error.type"): p for p in metrics["messaging.process.duration"]}
    assert durations[None].count == 3
    assert durations["RuntimeError"].count == 2
    assert durations["ValueError"].count == 2
    assert list(durations[None].explicit_bounds)[:3] == [0.005, 0.01, 0.025]


@pytest.mark.parametrize(
    ("driver", "options", "expected"),
    [
        ("rabbitmq", {}, "rabbitmq"),
        ("sqs", {}, "aws_sqs"),
        ("database", {"url": "postgresql+psycopg://u@h/db"}, "postgresql"),
        ("database", {"url": "mysql+pymysql://root@h/db"}, "mysql"),
        ("database", {"url": "sqlite:///x.sqlite3"}, "sqlite"),
        ("database", {}, "sqlite"),
        ("memory", {}, "pashq.memory"),
    ],
)
def test_messaging_system_names_the_backend(
    driver: str, options: dict[str, str], expected: str
) -> None:
    assert messaging_system(driver, options) == expected


def test_configured_plugin_learns_the_system_from_the_driver() -> None:
    pashq.configure({"queues": {"default": {"type": "memory", "plugins": ["opentelemetry"]}}})
    plugin = pashq.queue().plugin_manager.get_plugin("pashq.plugin.opentelemetry")
    assert isinstance(plugin, OpenTelemetryPlugin)
    assert plugin.system == "pashq.memory"


def test_message_without_trace_context_starts_a_new_trace_in_the_worker(
    connection: pashq.Connection, telemetry: Telemetry
) -> None:
    # Pushed below the dispatch hooks, as a producer without the plugin would store it.
    envelope = pashq.Envelope("f" * 32, Fine.type_name, {"n": 1}, "2026-12-01T00:00:00.000000Z", {})
    connection.hook.pashq_push(
        queue="orders",
        messages=[OutgoingMessage(envelope.id, envelope.type, pashq.encode_envelope(envelope))],
        options={},
    )
    pashq.Worker("orders", connection=connection, install_signal_handlers=False).run(
        until_empty=True
    )
    [process] = telemetry.spans.get_finished_spans()
    assert process.parent is None
    assert process.attributes["messaging.message.id"] == "f" * 32
    assert process.attributes["pashq.outcome"] == "ack"


def test_undecodable_delivery_gets_a_dead_letter_span(
    connection: pashq.Connection, telemetry: Telemetry
) -> None:
    connection.hook.pashq_push(
        queue="orders", messages=[OutgoingMessage("a" * 32, "x", b"not json")], options={}
    )
    pashq.Worker("orders", connection=connection, install_signal_handlers=False).run(
        until_empty=True
    )
    [process] = telemetry.spans.get_finished_spans()
    assert process.attributes["pashq.outcome"] == "dead_letter"
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description.startswith("dead-lettered: undecodable envelope")


def test_async_handlers_running_together_each_see_their_own_process_span(
    connection: pashq.Connection, telemetry: Telemetry
) -> None:
    _handler_tracer.append(telemetry.tracer_provider.get_tracer("handler"))
    ids = connection.dispatch_many("orders", [TracedAsync(i) for i in range(8)])
    pashq.Worker("orders", connection=connection, concurrency=4, install_signal_handlers=False).run(
        until_empty=True
    )
    spans = telemetry.spans.get_finished_spans()
    processes = {s.context.span_id: s for s in spans if s.name == "process orders"}
    handlers = [s for s in spans if s.name.startswith("handler ")]
    assert len(handlers) == 8
    for handler in handlers:
        process = processes[handler.parent.span_id]
        n = int(handler.name.split()[1])
        assert process.attributes["messaging.message.id"] == ids[n]


def test_message_dispatched_by_a_handler_continues_the_trace(
    connection: pashq.Connection, telemetry: Telemetry
) -> None:
    connection.dispatch("orders", Chained())
    pashq.Worker("orders", connection=connection, install_signal_handlers=False).run(
        until_empty=True
    )
    spans = telemetry.spans.get_finished_spans()
    first, second = (s for s in spans if s.name == "process orders")
    follow_up = [s for s in spans if s.name == "send orders"][1]
    assert follow_up.parent.span_id == first.context.span_id
    assert second.parent.span_id == follow_up.context.span_id
    assert len({s.context.trace_id for s in spans}) == 1

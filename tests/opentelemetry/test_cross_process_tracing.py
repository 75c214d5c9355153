"""A producer (this process) dispatches, a separate ``pashq work`` process consumes, and
the consumer's spans continue the producer's trace: on SQLite, PostgreSQL, RabbitMQ and SQS.

One worker run per backend handles three messages, each dispatched on its own: one that
succeeds, one that fails twice and then succeeds, one that is dead-lettered.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_messages import AlwaysFails, FailsTwice, Fine
from otel_support import BACKENDS, backend_table, run_worker, worker_env, write_config

from pashq.testing import make_connection


@attrs.frozen
class Run:
    """What one backend's run left: the producer's spans and the worker's, per message."""

    backend: str
    ids: dict[str, str]  # "fine" / "fails_twice" / "dead" -> message id
    roots: dict[str, Any]  # the producer's enclosing span per message
    sends: dict[str, Any]  # message id -> the producer's send span
    processes: dict[str, list[dict[str, Any]]]  # message id -> worker process spans
    dead_letters: list[Any]


@pytest.fixture(scope="module", params=list(BACKENDS))
def run(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    producer_spans: InMemorySpanExporter,
) -> Run:
    """Dispatch the three messages here, consume them in a ``pashq work`` subprocess."""
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"otel-{backend}")
    queue = f"otel-{backend}-{tmp.name[-6:]}".replace("_", "-")
    table = {**backend_table(backend, tmp, queue, request), "plugins": ["opentelemetry"]}
    config = write_config(tmp / "pashq.toml", table, imports=["otel_messages"])
    producer_spans.clear()
    producer = make_connection(table)
    tracer = trace.get_tracer("pashq-tests")
    ids: dict[str, str] = {}
    roots: dict[str, Any] = {}
    try:
        for key, message in (
            ("fine", Fine(1)),
            ("fails_twice", FailsTwice(2)),
            ("dead", AlwaysFails(3)),
        ):
            with tracer.start_as_current_span(f"checkout {key}") as root:
                ids[key] = producer.dispatch(queue, message)
            roots[key] = root
    finally:
        producer.close()
    spans_file = tmp / "spans.jsonl"
    run_worker(
        config,
        queue,
        "--import",
        "otel_worker_setup",
        "--max-messages",
        "6",  # 1 + 3 + 2 deliveries
        env=worker_env(PASHQ_TEST_SPANS_FILE=str(spans_file)),
    )
    sends = {
        s.attributes["messaging.message.id"]: s
        for s in producer_spans.get_finished_spans()
        if s.name == f"send {queue}"
    }
    processes: dict[str, list[dict[str, Any]]] = {}
    for line in spans_file.read_text(encoding="utf-8").splitlines():
        span = json.loads(line)
        if span["name"] == f"process {queue}":
            processes.setdefault(span["attributes"]["messaging.message.id"], []).append(span)
    for spans in processes.values():
        spans.sort(key=lambda s: s["attributes"]["pashq.attempt"])
    checker = make_connection({k: v for k, v in table.items() if k != "plugins"})
    try:
        dead = checker.failed(queue)
    finally:
        checker.close()
    return Run(backend, ids, roots, sends, processes, dead)


def _hex(value: int, width: int) -> str:
    return f"{value:0{width}x}"


def test_producer_span_is_a_send_span_with_the_conventions_attributes(run: Run) -> None:
    send = run.sends[run.ids["fine"]]
    assert send.kind is trace.SpanKind.PRODUCER
    assert send.parent.span_id == run.roots["fine"].get_span_context().span_id
    assert send.attributes["messaging.system"] == BACKENDS[run.backend]
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.destination.name"].startswith("otel-")


def test_consumer_span_continues_the_producers_trace(run: Run) -> None:
    send = run.sends[run.ids["fine"]]
    [process] = run.processes[run.ids["fine"]]
    assert process["kind"] == "CONSUMER"
    assert process["trace_id"] == _hex(send.context.trace_id, 32)
    assert process["parent_id"] == _hex(send.context.span_id, 16)
    attributes = process["attributes"]
    assert attributes["messaging.system"] == BACKENDS[run.backend]
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["pashq.attempt"] == 1
    assert attributes["pashq.outcome"] == "ack"
    assert process["status"] == "UNSET"


def test_message_failing_twice_then_succeeding_has_three_process_spans_in_one_trace(
    run: Run,
) -> None:
    send = run.sends[run.ids["fails_twice"]]
    spans = run.processes[run.ids["fails_twice"]]
    assert [s["attributes"]["pashq.attempt"] for s in spans] == [1, 2, 3]
    assert {s["trace_id"] for s in spans} == {_hex(send.context.trace_id, 32)}
    assert [s["attributes"]["pashq.outcome"] for s in spans] == ["retry", "retry", "ack"]
    assert [s["status"] for s in spans] == ["ERROR", "ERROR", "UNSET"]
    assert spans[0]["events"] == ["exception"]
    assert spans[0]["description"] == "RuntimeError: attempt 1 fails"


def test_dead_lettered_message_span_has_error_status_and_the_reason(run: Run) -> None:
    send = run.sends[run.ids["dead"]]
    spans = run.processes[run.ids["dead"]]
    assert [s["attributes"]["pashq.outcome"] for s in spans] == ["retry", "dead_letter"]
    assert {s["trace_id"] for s in spans} == {_hex(send.context.trace_id, 32)}
    last = spans[-1]
    reason = "failed 2 time(s), last: ValueError: card 3 declined"
    assert last["status"] == "ERROR"
    assert last["description"] == f"dead-lettered: {reason}"
    assert last["attributes"]["pashq.dead_letter.reason"] == reason
    assert last["attributes"]["error.type"] == "ValueError"
    assert [d.id for d in run.dead_letters] == [run.ids["dead"]]

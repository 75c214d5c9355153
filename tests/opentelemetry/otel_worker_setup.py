"""Imported by the ``pashq work`` subprocesses of the tests (``--import otel_worker_setup``):
installs the OpenTelemetry SDK with an exporter that appends each finished span as one JSON
line to the file named by ``PASHQ_TEST_SPANS_FILE``, so the test process can read them."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence

import otel_messages  # noqa: F401  (registers the message types)
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


def span_record(span: ReadableSpan) -> dict[str, object]:
    """The parts of a span the tests check, JSON-ready."""
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "description": span.status.description,
        "events": [event.name for event in span.events],
        "links": [f"{link.context.span_id:016x}" for link in span.links],
    }


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file, one JSON object per line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(s), default=str) + "\n" for s in spans)
        with self.lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(lines)
        return SpanExportResult.SUCCESS


_provider = TracerProvider()
_provider.add_span_processor(
    SimpleSpanProcessor(JsonLinesExporter(os.environ["PASHQ_TEST_SPANS_FILE"]))
)
trace.set_tracer_provider(_provider)

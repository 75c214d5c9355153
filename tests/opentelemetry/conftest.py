"""Fixtures of the OpenTelemetry and observability tests.

The test process is the producer: its spans go to the SDK's in-memory exporter (installed
once as the global tracer provider). Workers are ``pashq work`` subprocesses that import
``otel_worker_setup``, which writes their spans to a JSON-lines file. Backends are real:
SQLite, PostgreSQL, RabbitMQ and moto's SQS server (the fixtures of tests/sqs/conftest.py,
loaded from where they are). A server that does not answer fails the test. The helpers are
in ``otel_support.py``.
"""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def _load_sqs_fixtures() -> Any:
    """tests/sqs/conftest.py as a module (its moto server fixtures are reused here)."""
    path = Path(__file__).parent.parent / "sqs" / "conftest.py"
    spec = importlib.util.spec_from_file_location("pashq_tests_sqs_fixtures", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_sqs = _load_sqs_fixtures()
aws_environment = _sqs.aws_environment
moto_endpoint = _sqs.moto_endpoint


@pytest.fixture(scope="session")
def producer_spans() -> InMemorySpanExporter:
    """The in-memory exporter of this process's global tracer provider (set once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
def queue_name() -> str:
    """A fresh queue name, valid on every backend."""
    return f"otel-{uuid.uuid4().hex[:10]}"

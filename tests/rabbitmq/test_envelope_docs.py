"""docs/envelope.md's plain-pika producer, run as written against the test broker.

Only the queue name (``billing`` in the page) is replaced, by the test's own queue, and the
URL by the test broker's when ``PASHQ_TEST_RABBITMQ_URL`` points elsewhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pika.exceptions
import pytest
from doc_samples import code_block, paid_invoices

from pashq import Worker
from pashq.connection import Connection

from .conftest import URL

PAGE = "envelope.md"
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def _run_samples(queue: str, namespace: dict[str, Any]) -> None:
    exec(code_block(PAGE, "def envelope("), namespace)  # builds message_id and data
    producer = code_block(PAGE, "import pika")
    producer = producer.replace('routing_key="billing"', f"routing_key={queue!r}")
    try:
        exec(producer.replace(DEFAULT_URL, URL), namespace)
    finally:
        if "connection" in namespace and namespace["connection"].is_open:
            namespace["connection"].close()


def test_the_pika_producer_sample_reaches_a_pashq_worker(
    queue_name: str, connect: Callable[..., Connection]
) -> None:
    conn = connect()
    conn.hook.pashq_declare(queue=queue_name)  # "let a pashq worker declare it first"
    namespace: dict[str, Any] = {}
    _run_samples(queue_name, namespace)
    worker = Worker(queue_name, connection=conn, install_signal_handlers=False, max_messages=1)
    stats = worker.run()
    assert stats.acked == 1
    assert 42 in paid_invoices()
    assert namespace["message_id"]


def test_the_pika_sample_raises_for_a_queue_that_does_not_exist() -> None:
    """mandatory=True: a publish nobody can receive fails instead of vanishing."""
    missing = f"pashq-test-missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(pika.exceptions.UnroutableError):
        _run_samples(missing, {})

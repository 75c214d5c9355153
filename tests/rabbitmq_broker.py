"""The test broker for every test directory: its URLs and plain-pika queue cleanup.

Imported by tests/rabbitmq/conftest.py and by other directories' tests that use RabbitMQ
(tests/move, tests/opentelemetry), so they share one way to reach and clean the broker.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable

import pika
import pika.exceptions
import pytest

URL = os.environ.get("PASHQ_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
MANAGEMENT_URL = os.environ.get("PASHQ_TEST_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")
HINT = "start it with `rabbitmq-server -detached` (or set PASHQ_TEST_RABBITMQ_URL)"


def broker_address() -> tuple[str, int]:
    """The test broker's host and port."""
    parts = urllib.parse.urlsplit(URL)
    return parts.hostname or "127.0.0.1", parts.port or 5672


def raw_connection() -> pika.BlockingConnection:
    """A plain pika connection to the test broker (fails the test if unreachable)."""
    try:
        return pika.BlockingConnection(pika.URLParameters(URL))
    except pika.exceptions.AMQPError as exc:
        pytest.fail(f"RabbitMQ at {broker_address()} is not reachable ({exc!r}): {HINT}")


def delete_queues(names: Iterable[str]) -> None:
    """Delete queues (missing ones are fine); fails the test when the broker is down."""
    connection = raw_connection()
    try:
        for name in sorted(set(names)):
            channel = connection.channel()
            try:
                channel.queue_delete(name)
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:
                pass
    finally:
        connection.close()

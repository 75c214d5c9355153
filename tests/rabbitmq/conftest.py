"""Fixtures for the RabbitMQ driver tests: a real broker, unique queues, cleanup.

The broker is RabbitMQ on ``amqp://guest:guest@127.0.0.1:5672/%2F``, or the URL in
``PASHQ_TEST_RABBITMQ_URL``. A broker that does not answer fails the tests (it is never a
skip): start it with ``rabbitmq-server -detached``.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pika
import pika.exceptions
import pytest
from rabbitmq_broker import HINT as _HINT

# Re-exported: this directory's tests import them from here.
from rabbitmq_broker import MANAGEMENT_URL as MANAGEMENT_URL
from rabbitmq_broker import URL as URL
from rabbitmq_broker import broker_address as broker_address
from rabbitmq_broker import delete_queues as delete_queues
from rabbitmq_broker import raw_connection as raw_connection

from pashq.connection import Connection
from pashq.testing import make_connection


def port_answers() -> bool:
    try:
        with socket.create_connection(broker_address(), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for_broker(timeout: float = 90.0) -> None:
    """Wait until the broker accepts AMQP connections again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_answers():
            try:
                pika.BlockingConnection(pika.URLParameters(URL)).close()
                return
            except pika.exceptions.AMQPError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"RabbitMQ did not come back within {timeout}s: {_HINT}")


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="session", autouse=True)
def _broker_is_up() -> None:
    if not port_answers():
        pytest.fail(f"RabbitMQ is not listening on {broker_address()}: {_HINT}", pytrace=False)


@pytest.fixture
def queue_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh queue name; the queue and its failed/delay queues are deleted afterwards."""
    name = f"pashq-test-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
    yield name
    delete_queues({name, f"{name}.failed"})


@pytest.fixture
def connect(queue_name: str) -> Iterator[Callable[..., Connection]]:
    """Open pashq connections to the broker (options override the defaults); all are
    closed and every queue they declared is deleted at teardown."""
    opened: list[Connection] = []

    def open_connection(**options: Any) -> Connection:
        table = {"type": "rabbitmq", "url": URL, **options}
        connection = make_connection(table)
        opened.append(connection)
        return connection

    yield open_connection
    declared: set[str] = set()
    for connection in opened:
        declared |= getattr(connection.driver, "declared_queues", set())
        connection.close()
    delete_queues(declared)

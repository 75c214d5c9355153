"""The driver contract suite on RabbitMQ, on classic and on quorum queues."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pashq.connection import Connection
from pashq.testing import DriverContract, QueueUnderTest, make_connection

from .conftest import URL, delete_queues

pytestmark = pytest.mark.rabbitmq


def _queue_under_test(queue_type: str) -> Iterator[QueueUnderTest]:
    table = {"type": "rabbitmq", "url": URL, "queue_type": queue_type, "prefetch": 50}
    opened: list[Connection] = []

    def open_connection() -> Connection:
        connection = make_connection(table)
        opened.append(connection)
        return connection

    name = f"contract-{queue_type}-{uuid.uuid4().hex[:8]}"
    yield QueueUnderTest(open_connection(), name, open_connection=open_connection, lease=None)
    declared = {name, f"{name}.failed", f"{name}-other", f"{name}-other.failed"}
    for connection in opened:
        declared |= connection.driver.declared_queues
        connection.close()
    delete_queues(declared)


class TestClassicQueueContract(DriverContract):
    """Classic durable queues."""

    @pytest.fixture
    def queue_under_test(self) -> Iterator[QueueUnderTest]:
        yield from _queue_under_test("classic")


class TestQuorumQueueContract(DriverContract):
    """Quorum queues (x-delivery-count counts redeliveries)."""

    @pytest.fixture
    def queue_under_test(self) -> Iterator[QueueUnderTest]:
        yield from _queue_under_test("quorum")

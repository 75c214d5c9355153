"""The queue-listing contract on RabbitMQ with ``management_url`` (AMQP alone cannot list)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pashq.connection import Connection
from pashq.errors import UnsupportedError
from pashq.testing import QueueListingContract, QueueUnderTest, make_connection

from .conftest import MANAGEMENT_URL, URL, delete_queues

pytestmark = pytest.mark.rabbitmq


class TestQueueListingWithManagement(QueueListingContract):
    """``pashq_queues`` through the management API."""

    @pytest.fixture
    def queue_under_test(self) -> Iterator[QueueUnderTest]:
        table = {"type": "rabbitmq", "url": URL, "management_url": MANAGEMENT_URL}
        connection: Connection = make_connection(table)
        name = f"listing-{uuid.uuid4().hex[:8]}"
        yield QueueUnderTest(connection, name, lease=None)
        declared = {name, f"{name}.failed"} | connection.driver.declared_queues
        connection.close()
        delete_queues(declared)


def test_without_management_url_the_configured_queues_are_listed() -> None:
    """Without ``management_url`` the driver answers ``None`` and ``queues = [...]`` counts."""
    connection = make_connection({"type": "rabbitmq", "url": URL, "queues": ["b", "a"]})
    try:
        assert connection.hook.pashq_queues() is None
        assert connection.queues() == ["a", "b"]
    finally:
        connection.close()


def test_without_management_url_or_queues_listing_is_unsupported() -> None:
    """With neither, ``Connection.queues()`` says what to configure."""
    connection = make_connection({"type": "rabbitmq", "url": URL})
    try:
        with pytest.raises(UnsupportedError, match=r"queues = \["):
            connection.queues()
    finally:
        connection.close()

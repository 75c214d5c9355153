"""The pashq driver contract on moto's SQS server: standard and FIFO queues."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pashq.delivery import OutgoingMessage
from pashq.envelope import Envelope, encode_envelope, new_message_id, utc_timestamp
from pashq.testing import (
    DriverContract,
    ForkContract,
    QueueUnderTest,
    contract_override,
    drain,
    make_connection,
)
from pashq_sqs import IgnoredAttributeWarning

pytestmark = pytest.mark.sqs

LEASE = 2


def _table(endpoint: str) -> dict[str, Any]:
    return {
        "type": "sqs",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "create_queues": True,
        "visibility_timeout": LEASE,
        "wait_time": 2,
    }


_STALE_ACK = (
    "SQS deletes a message for a receipt handle of an earlier receive (AWS: 'the request "
    "succeeds, but the message might not be deleted'; moto always deletes): a stale ack "
    "can remove the message another consumer holds. The driver cannot tell a stale receipt "
    "handle from the current one; checked here as the backend's documented behaviour"
)


def _raw() -> OutgoingMessage:
    envelope = Envelope(new_message_id(), "pashq.testing.raw", {"n": 0}, utc_timestamp(), {})
    return OutgoingMessage(envelope.id, envelope.type, encode_envelope(envelope))


def _stale_ack_deletes(qut: QueueUnderTest) -> None:
    """SQS: an ack with the receipt of an earlier receive still deletes the message."""
    conn, name = qut.connection, qut.name
    message = _raw()
    conn.hook.pashq_push(queue=name, messages=[message], options={})
    (stale,) = drain(conn, name, 1, ack=False)
    (held,) = drain(conn, name, 1, ack=False, timeout=float(LEASE) + 15)
    assert held.attempts == 2
    conn.hook.pashq_ack(queue=name, deliveries=[stale])
    assert drain(conn, name, 1, timeout=float(LEASE) + 3) == []


class TestStandardQueueContract(DriverContract):
    """Every contract test on a standard queue (created with its dead-letter queue)."""

    @pytest.fixture
    def queue_under_test(self, moto_endpoint: str) -> Iterator[QueueUnderTest]:
        table = _table(moto_endpoint)
        connection = make_connection(table)
        yield QueueUnderTest(
            connection,
            f"contract-{uuid.uuid4().hex[:8]}",
            open_connection=lambda: make_connection(table),
            lease=float(LEASE),
        )
        connection.close()

    @contract_override(_STALE_ACK)
    def test_stale_ack_does_not_remove_the_redelivered_message(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """SQS: a stale ack deletes (documented backend behaviour)."""
        _stale_ack_deletes(queue_under_test)


class TestFifoQueueContract(DriverContract):
    """Every contract test on FIFO queues (``fifo = true``: group = the queue name, dedup
    = the message id)."""

    @pytest.fixture
    def queue_under_test(self, moto_endpoint: str) -> Iterator[QueueUnderTest]:
        table = {**_table(moto_endpoint), "fifo": True}
        connection = make_connection(table)
        yield QueueUnderTest(
            connection,
            f"contract-{uuid.uuid4().hex[:8]}",
            open_connection=lambda: make_connection(table),
            lease=float(LEASE),
        )
        connection.close()

    @contract_override(_STALE_ACK)
    def test_stale_ack_does_not_remove_the_redelivered_message(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """SQS: a stale ack deletes (documented backend behaviour)."""
        _stale_ack_deletes(queue_under_test)

    @contract_override(
        "SQS FIFO queues take no per-message DelaySeconds (AWS); the driver warns and sends "
        "the message at once instead of failing or delaying silently"
    )
    def test_delayed_message_is_not_delivered_early(self, queue_under_test: QueueUnderTest) -> None:
        """On FIFO a delay is ignored with an IgnoredAttributeWarning, never silently."""
        envelope = Envelope(new_message_id(), "pashq.testing.raw", {"n": 0}, utc_timestamp(), {})
        message = OutgoingMessage(envelope.id, envelope.type, encode_envelope(envelope), 2.0)
        started = time.monotonic()
        with pytest.warns(IgnoredAttributeWarning, match="per-message delay"):
            queue_under_test.connection.hook.pashq_push(
                queue=queue_under_test.name, messages=[message], options={}
            )
        (delivery,) = drain(queue_under_test.connection, queue_under_test.name, 1)
        assert delivery.id == message.id
        assert time.monotonic() - started < 10


class TestForkOnKeepAliveServer(ForkContract):
    """The fork tests on a server that keeps connections open, as SQS does: stock moto
    closes each connection after one response, so a pooled socket shared by a parent and
    its forked children would go unnoticed on the other classes."""

    @pytest.fixture
    def queue_under_test(self, moto_keep_alive_endpoint: str) -> Iterator[QueueUnderTest]:
        table = _table(moto_keep_alive_endpoint)
        connection = make_connection(table)
        yield QueueUnderTest(
            connection,
            f"fork-{uuid.uuid4().hex[:8]}",
            open_connection=lambda: make_connection(table),
            lease=float(LEASE),
        )
        connection.close()

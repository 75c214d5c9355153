"""A hostile ``x-pashq-attempts`` header cannot buy a message extra retries."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pika

from pashq import Worker, encode_envelope
from pashq.connection import Connection
from pashq.envelope import Envelope, utc_timestamp
from pashq.testing.messages import AlwaysFails, processed

from .conftest import raw_connection


def test_a_negative_attempts_header_still_ends_after_max_attempts(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """x-pashq-attempts = -1000 from a foreign producer counts as the first attempt."""
    conn = connect()
    conn.hook.pashq_declare(queue=queue_name)
    key = uuid.uuid4().hex
    envelope = Envelope(uuid.uuid4().hex, AlwaysFails.type_name, {"key": key}, utc_timestamp(), {})
    raw = raw_connection()
    try:
        channel = raw.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "",
            queue_name,
            encode_envelope(envelope),
            pika.BasicProperties(delivery_mode=2, headers={"x-pashq-attempts": -1000}),
            mandatory=True,
        )
    finally:
        raw.close()
    worker = Worker(queue_name, connection=conn, install_signal_handlers=False, max_messages=6)
    stats = worker.run(until_empty=True)
    assert len(processed(key)) == 3  # max_attempts of AlwaysFails, not ~1,000
    assert stats.retried == 2 and stats.dead_lettered == 1
    assert [d.id for d in conn.failed(queue_name)] == [envelope.id]

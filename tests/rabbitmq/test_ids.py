"""The id rule: a message's id is its envelope's ``id``; ``message_id`` is only a copy.

Another client may publish a pashq envelope with a ``message_id`` of its own. Dead
letters, ``failed retry --id`` and ``failed purge --id`` then name the envelope id.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pika
import pytest

from pashq.connection import Connection
from pashq.testing import wait_for
from pashq.worker import Worker

from .conftest import raw_connection
from .rabbitmq_test_messages import Invalid

assert Invalid  # registers the type the foreign publisher names

pytestmark = pytest.mark.rabbitmq


def _publish_foreign(queue: str, envelope_id: str, message_id: str) -> None:
    body = json.dumps(
        {
            "v": 1,
            "id": envelope_id,
            "type": "pashq_rabbitmq_tests.invalid",
            "body": {"n": 1},
            "created_at": "2026-12-01T18:00:00.000000Z",
            "headers": {},
        }
    ).encode()
    raw = raw_connection()
    try:
        channel = raw.channel()
        # What pashq declares (x-max-priority 9): an equal declare is accepted.
        channel.queue_declare(queue, durable=True, arguments={"x-max-priority": 9})
        channel.basic_publish(
            "", queue, body, pika.BasicProperties(delivery_mode=2, message_id=message_id)
        )
    finally:
        raw.close()


def test_dead_letter_of_foreign_message_id_is_retried_and_purged_by_envelope_id(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A message whose message_id differs from its envelope id, dead-lettered by a worker,
    is listed, retried and purged by the envelope id."""
    conn = connect()
    conn.hook.pashq_declare(queue=queue_name)
    envelope_id = uuid.uuid4().hex
    _publish_foreign(queue_name, envelope_id, message_id="foreign-" + uuid.uuid4().hex)
    stats = Worker(queue_name, connection=conn, install_signal_handlers=False).run(until_empty=True)
    assert stats.dead_lettered == 1
    (dead,) = wait_for(lambda: conn.failed(queue_name), timeout=10, what="the dead letter")
    assert dead.id == envelope_id
    assert conn.retry_failed(queue_name, [envelope_id]) == 1
    (back,) = wait_for(
        lambda: conn.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=0.5),
        timeout=10,
        what="the retried message",
    )
    assert back.receipt.properties.message_id == envelope_id
    conn.hook.pashq_dead_letter(queue=queue_name, delivery=back, reason="again", traceback=None)
    wait_for(lambda: conn.failed(queue_name), timeout=10, what="dead again")
    assert conn.purge_failed(queue_name, [envelope_id]) == 1
    assert conn.failed(queue_name) == []


def test_undecodable_body_keeps_its_transport_id_as_dead_letter_id(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A body whose envelope id is invalid has no envelope id: its dead letter is named
    by the transport message_id, as docs/envelope.md says."""
    conn = connect()
    conn.hook.pashq_declare(queue=queue_name)
    transport_id = "foreign-" + uuid.uuid4().hex
    _publish_foreign(queue_name, "not/a valid id", message_id=transport_id)
    stats = Worker(queue_name, connection=conn, install_signal_handlers=False).run(until_empty=True)
    assert stats.dead_lettered == 1
    (dead,) = wait_for(lambda: conn.failed(queue_name), timeout=10, what="the dead letter")
    assert dead.id == transport_id and "undecodable envelope" in dead.reason
    assert conn.purge_failed(queue_name, [transport_id]) == 1

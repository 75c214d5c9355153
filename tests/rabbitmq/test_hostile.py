"""Hostile input in retries and dead letters: the copy is made, or the original stays.

A retry or a dead letter publishes a copy, then acks the original. Whatever the ids,
reasons, tracebacks and headers hold (300-byte ids, lone surrogates, header names over
AMQP's 255-byte limit), the message must end up copied correctly or back on its queue:
never acked without a confirmed copy.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pytest

from pashq.connection import Connection
from pashq.delivery import Delivery
from pashq.testing import wait_for
from pashq.text import safe_text
from pashq.worker import Worker

from .conftest import raw_connection
from .rabbitmq_test_messages import Failing, Recorded

assert Failing  # registers the type the raw publisher names

pytestmark = pytest.mark.rabbitmq


def _envelope(message_id: str) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "id": message_id,
            "type": "pashq_rabbitmq_tests.recorded",
            "body": {"key": "hostile", "n": 1, "sleep": 0.0},
            "created_at": "2026-12-01T18:00:00.000000Z",
            "headers": {},
        }
    ).encode()


def _publish_raw(queue: str, body: bytes, **properties: Any) -> None:
    """Publish with plain pika (no message_id unless given), as another client would."""
    raw = raw_connection()
    try:
        channel = raw.channel()
        # What pashq declares (x-max-priority 9): an equal declare is accepted.
        channel.queue_declare(queue, durable=True, arguments={"x-max-priority": 9})
        channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2, **properties))
    finally:
        raw.close()


def _pull(conn: Connection, queue: str, timeout: float = 15.0) -> Delivery:
    def one() -> list[Delivery]:
        got: list[Delivery] = conn.hook.pashq_pull(queue=queue, max_messages=1, timeout=0.5)
        return got

    (delivery,) = wait_for(one, timeout=timeout, what=f"a delivery on {queue!r}")
    return delivery


def _hostile_delivery(conn: Connection, queue: str, case: str) -> tuple[Delivery, str]:
    """Put one message on ``queue``, pull it and make it hostile; return it and its id."""
    if case == "id_of_300_bytes":
        message_id = "i" * 300
        _publish_raw(queue, _envelope(message_id))
    elif case == "lone_surrogate_in_id":
        message_id = "\udc80" + uuid.uuid4().hex
        _publish_raw(queue, _envelope(message_id))
    else:
        message_id = conn.dispatch(queue, Recorded("hostile", 1))
    delivery = _pull(conn, queue)
    headers = delivery.receipt.properties.headers
    if case == "lone_surrogate_in_header":
        delivery.receipt.properties.headers = {**(headers or {}), "x-app": "a\udc80b"}
    elif case == "header_name_of_300_bytes":
        delivery.receipt.properties.headers = {**(headers or {}), "h" * 300: "value"}
    assert delivery.id == message_id
    return delivery, message_id


_CASES = [
    "id_of_300_bytes",
    "lone_surrogate_in_id",
    "lone_surrogate_in_header",
    "header_name_of_300_bytes",
]


@pytest.mark.parametrize("case", _CASES)
def test_retry_of_hostile_message_is_copied_not_lost(
    connect: Callable[..., Connection], queue_name: str, case: str
) -> None:
    """pashq_nack on a hostile delivery publishes a usable copy (one more attempt)."""
    conn = connect(publish_timeout=5.0)
    delivery, message_id = _hostile_delivery(conn, queue_name, case)
    conn.hook.pashq_nack(queue=queue_name, deliveries=[delivery], delay=0.0)
    again = _pull(conn, queue_name)
    assert again.id == message_id and again.body == delivery.body
    assert again.receipt.properties.headers["x-pashq-attempts"] == 1  # a copy, not a requeue
    assert again.attempts == 2
    conn.hook.pashq_ack(queue=queue_name, deliveries=[again])


@pytest.mark.parametrize("case", _CASES)
def test_dead_letter_of_hostile_message_is_copied_not_lost(
    connect: Callable[..., Connection], queue_name: str, case: str
) -> None:
    """pashq_dead_letter on a hostile delivery stores it in the failed queue."""
    conn = connect(publish_timeout=5.0)
    delivery, message_id = _hostile_delivery(conn, queue_name, case)
    conn.hook.pashq_dead_letter(
        queue=queue_name, delivery=delivery, reason="ValueError: bad", traceback="Traceback"
    )
    (dead,) = wait_for(lambda: conn.failed(queue_name), timeout=10, what="the dead letter")
    assert dead.id == message_id and dead.body == delivery.body
    assert dead.reason == "ValueError: bad"
    assert conn.stats(queue_name).ready == 0


@pytest.mark.parametrize(
    ("reason", "traceback"),
    [
        ("bad \udc80 reason", "Traceback"),
        ("ValueError", "Traceback \ud800 (lone surrogate)"),
        ("x" * 100_000, "t" * 100_000),
        ("nul \x00 in reason", "nul \x00 in traceback"),
    ],
    ids=["surrogate_reason", "surrogate_traceback", "huge_texts", "nul"],
)
def test_dead_letter_with_hostile_reason_or_traceback_is_stored_safely(
    connect: Callable[..., Connection], queue_name: str, reason: str, traceback: str
) -> None:
    """Reasons and tracebacks are stored as safe text (escaped, capped), never dropped."""
    conn = connect(publish_timeout=5.0)
    message_id = conn.dispatch(queue_name, Recorded("hostile", 1))
    delivery = _pull(conn, queue_name)
    conn.hook.pashq_dead_letter(
        queue=queue_name, delivery=delivery, reason=reason, traceback=traceback
    )
    (dead,) = wait_for(lambda: conn.failed(queue_name), timeout=10, what="the dead letter")
    assert dead.id == message_id
    assert dead.reason == safe_text(reason, 4000)
    assert dead.traceback == safe_text(traceback, 32_000, keep="tail")
    assert conn.stats(queue_name).ready == 0


def test_worker_retries_and_dead_letters_a_hostile_error_without_stalling(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """End to end, concurrency 1: a message whose error holds a lone surrogate is retried
    once, then dead-lettered; no stall of publish_timeout, nothing lost."""
    conn = connect(publish_timeout=15.0, max_attempts=2, retry_delay=0.1)
    message_id = conn.dispatch(queue_name, Failing(7))
    started = time.monotonic()
    stats = Worker(queue_name, connection=conn, install_signal_handlers=False).run(until_empty=True)
    elapsed = time.monotonic() - started
    assert (stats.retried, stats.dead_lettered, stats.errors) == (1, 1, 0)
    assert elapsed < 10.0  # before the fix each copy waited publish_timeout
    (dead,) = conn.failed(queue_name)
    assert dead.id == message_id and dead.attempts == 2
    assert "failing \\udc80 message 7" in dead.reason
    assert conn.stats(queue_name).ready == 0


def test_worker_dead_letters_an_envelope_with_a_300_byte_id(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """An envelope whose id is too long for the core (and for AMQP's message_id) is
    dead-lettered as undecodable, under that id, without stalling."""
    conn = connect(publish_timeout=15.0)
    message_id = "f" * 300
    _publish_raw(queue_name, _envelope(message_id))
    started = time.monotonic()
    stats = Worker(queue_name, connection=conn, install_signal_handlers=False).run(until_empty=True)
    assert time.monotonic() - started < 10.0
    assert (stats.dead_lettered, stats.errors) == (1, 0)
    (dead,) = conn.failed(queue_name)
    assert dead.id == message_id and "undecodable envelope" in dead.reason
    assert conn.stats(queue_name).ready == 0

"""Priorities on RabbitMQ: ``x-max-priority`` on the work queues pashq declares, the AMQP
``priority`` property, what a retry keeps, and queues declared before without it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest

from pashq.connection import Connection
from pashq.delivery import OutgoingMessage
from pashq.errors import ConfigError, DriverError, UnsupportedError
from pashq.testing import drain, wait_for
from pashq.testing.messages import Recorded

from .conftest import raw_connection

pytestmark = pytest.mark.rabbitmq

Connect = Callable[..., Connection]


def _push(conn: Connection, queue: str, priorities: list[int]) -> list[str]:
    messages = [OutgoingMessage(uuid.uuid4().hex, "t", b"{}", priority=p) for p in priorities]
    conn.hook.pashq_push(queue=queue, messages=messages, options={})
    return [m.id for m in messages]


def _declare_accepts(queue: str, arguments: dict[str, Any] | None) -> bool:
    """Whether a (non-passive) redeclare with ``arguments`` matches the queue on the broker."""
    connection = raw_connection()
    try:
        connection.channel().queue_declare(queue, durable=True, arguments=arguments)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 406:
            raise
        return False
    finally:
        if connection.is_open:
            connection.close()


def test_work_queue_is_declared_with_x_max_priority(connect: Connect, queue_name: str) -> None:
    conn = connect()
    conn.hook.pashq_declare(queue=queue_name)
    assert _declare_accepts(queue_name, {"x-max-priority": 9})
    # The failed queue has none: it is browsed, never consumed in priority order.
    assert _declare_accepts(f"{queue_name}.failed", None)


def test_max_priority_sets_the_argument(connect: Connect, queue_name: str) -> None:
    conn = connect(max_priority=3)
    conn.hook.pashq_declare(queue=queue_name)
    assert _declare_accepts(queue_name, {"x-max-priority": 3})


def test_messages_carry_the_amqp_priority_and_arrive_highest_first(
    connect: Connect, queue_name: str
) -> None:
    conn = connect()
    ids = _push(conn, queue_name, [0, 2, 9, 2])
    wait_for(lambda: conn.stats(queue_name).ready == 4, timeout=10)
    got = drain(conn, queue_name, 4)
    assert [d.id for d in got] == [ids[2], ids[1], ids[3], ids[0]]
    assert [d.receipt.properties.priority for d in got] == [9, 2, 2, None]


def test_a_retry_keeps_the_priority(connect: Connect, queue_name: str) -> None:
    conn = connect()
    (message_id,) = _push(conn, queue_name, [6])
    (first,) = drain(conn, queue_name, 1, ack=False)
    conn.hook.pashq_nack(queue=queue_name, deliveries=[first], delay=0)
    (again,) = drain(conn, queue_name, 1, ack=False)
    assert (again.id, again.attempts, again.receipt.properties.priority) == (message_id, 2, 6)
    conn.hook.pashq_dead_letter(queue=queue_name, delivery=again, reason="r", traceback=None)
    assert conn.retry_failed(queue_name) == 1
    (retried,) = drain(conn, queue_name, 1)
    assert (retried.id, retried.receipt.properties.priority) == (message_id, 6)


def test_queue_declared_before_without_priorities_is_a_clear_error(
    connect: Connect, queue_name: str
) -> None:
    connection = raw_connection()
    try:
        connection.channel().queue_declare(queue_name, durable=True)
    finally:
        connection.close()
    conn = connect()
    with pytest.raises(DriverError) as info:
        conn.dispatch(queue_name, Recorded("old-queue", 1))
    text = str(info.value)
    assert "PRECONDITION_FAILED" in text and "x-max-priority" in text
    assert "delete the queue" in text and "max_priority" in text
    # What the error offers works: max_priority = 0 keeps the queue as it is.
    plain = connect(max_priority=0)
    assert not plain.capabilities.priorities
    plain.dispatch(queue_name, Recorded("old-queue", 2))
    with pytest.raises(UnsupportedError, match="priorit"):
        plain.dispatch(queue_name, Recorded("old-queue", 3), priority=1)


def test_quorum_queues_have_no_priorities_on_rabbitmq_3(connect: Connect, queue_name: str) -> None:
    conn = connect(queue_type="quorum")
    assert not conn.capabilities.priorities
    with pytest.raises(UnsupportedError, match="priorit"):
        conn.dispatch(queue_name, Recorded("quorum", 1), priority=5)
    conn.dispatch(queue_name, Recorded("quorum", 2))
    assert _declare_accepts(queue_name, {"x-queue-type": "quorum"})


@pytest.mark.parametrize("value", [-1, 256])
def test_max_priority_out_of_range_is_refused(connect: Connect, value: int) -> None:
    with pytest.raises(ConfigError, match="max_priority"):
        connect(max_priority=value)

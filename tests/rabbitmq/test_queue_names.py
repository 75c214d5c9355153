"""Queue names RabbitMQ would refuse fail before anything is declared.

AMQP queue names are short strings: at most 255 bytes of UTF-8. The driver adds
``.failed`` and ``.delay.<ms>`` (up to 17 bytes) to a name, so a name may have at most
238 bytes; ``amq.`` names are reserved by the broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from pashq.connection import Connection
from pashq.errors import DriverError, QueueNameError
from pashq.worker import Worker
from pashq_rabbitmq.topology import MAX_QUEUE_NAME_BYTES

from .rabbitmq_test_messages import Recorded

pytestmark = pytest.mark.rabbitmq

_BAD = {
    "250_characters": "q" * 250,
    "239_bytes": "q" * 239,
    "240_bytes_of_two_byte_characters": "é" * 120,
    "amq_prefix": "amq.pashq-test",
    "lone_surrogate": "bad-\udc80-name",
}


def test_longest_allowed_name_fits_with_every_suffix() -> None:
    """238 bytes plus the longest delay-queue suffix is exactly AMQP's 255."""
    from pashq_rabbitmq.topology import MAX_DELAY, delay_milliseconds, delay_queue, failed_queue

    name = "q" * MAX_QUEUE_NAME_BYTES
    assert len(delay_queue(name, delay_milliseconds(MAX_DELAY)).encode()) == 255
    assert len(failed_queue(name).encode()) < 255


@pytest.mark.parametrize("name", list(_BAD.values()), ids=list(_BAD))
def test_dispatch_to_a_name_rabbitmq_refuses_is_a_queue_name_error(
    connect: Callable[..., Connection], queue_name: str, name: str
) -> None:
    """dispatch raises QueueNameError naming the problem; the connection stays healthy."""
    conn = connect()
    with pytest.raises(QueueNameError) as caught:
        conn.dispatch(name, Recorded("names", 1))
    assert "rabbitmq" in str(caught.value)
    # Nothing was declared and the AMQP connection is still up.
    message_id = conn.dispatch(queue_name, Recorded("names", 2))
    assert conn.stats(queue_name).ready == 1 and message_id
    assert conn.driver.link.connections == 1


def test_name_of_238_bytes_works_with_delays_and_dead_letters(
    connect: Callable[..., Connection],
) -> None:
    """The longest allowed name dispatches, delays and dead-letters."""
    conn = connect()
    prefix = f"pashq-test-long-{uuid.uuid4().hex[:8]}-"
    name = prefix + "q" * (MAX_QUEUE_NAME_BYTES - len(prefix))
    conn.dispatch(name, Recorded("names", 1))
    conn.dispatch(name, Recorded("names", 2), delay=86_400 * 20)
    (delivery,) = conn.hook.pashq_pull(queue=name, max_messages=1, timeout=10.0)
    conn.hook.pashq_dead_letter(queue=name, delivery=delivery, reason="r", traceback=None)
    assert conn.stats(name).failed == 1
    assert conn.driver.link.connections == 1


def test_worker_start_on_a_name_rabbitmq_refuses_is_a_queue_name_error(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A Worker on a bad name fails at start, before declaring anything."""
    conn = connect()
    worker = Worker("w" * 250, connection=conn, install_signal_handlers=False)
    with pytest.raises(QueueNameError, match="255"):
        worker.run(until_empty=True)
    conn.dispatch(queue_name, Recorded("names", 1))
    assert conn.driver.link.connections == 1


def test_unsendable_admin_operation_fails_alone_and_keeps_the_connection(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A declare pika cannot encode (a name past the core's check, e.g. from a CLI
    command) fails that operation only: the AMQP connection stays up."""
    conn = connect()
    conn.dispatch(queue_name, Recorded("names", 1))
    link = conn.driver.link
    with pytest.raises(DriverError, match="cannot be sent"):
        link.declare("q" * 300, None, passive=True, timeout=10.0)
    conn.dispatch(queue_name, Recorded("names", 2))
    assert link.connections == 1 and conn.stats(queue_name).ready == 2


def test_pull_from_an_unsendable_name_fails_at_once_and_keeps_the_connection(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A pull through the hook (no core check) on a name pika cannot encode fails at once
    with a DriverError; the connection and other consumers carry on."""
    conn = connect()
    conn.dispatch(queue_name, Recorded("names", 1))
    assert conn.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=10.0)
    started = time.monotonic()
    with pytest.raises(DriverError, match="starting a consumer"):
        conn.hook.pashq_pull(queue="q" * 300, max_messages=1, timeout=1.0)
    assert time.monotonic() - started < 5.0
    conn.dispatch(queue_name, Recorded("names", 2))
    assert conn.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=10.0)
    assert conn.driver.link.connections == 1

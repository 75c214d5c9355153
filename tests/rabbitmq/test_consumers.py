"""One consumer per queue and connection, whatever order starts and cancels arrive in."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pashq.connection import Connection
from pashq.testing import wait_for

from .conftest import raw_connection
from .rabbitmq_test_messages import Recorded

pytestmark = pytest.mark.rabbitmq


def _consumers(queue: str) -> int:
    raw = raw_connection()
    try:
        return int(raw.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        raw.close()


def test_second_start_during_the_declare_round_trip_adds_no_consumer(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A consumer start that arrives while another one waits for its declare (a delayed
    restart after a broker cancel racing the restart after a reconnect) is a no-op."""
    conn = connect()
    conn.dispatch(queue_name, Recorded("consumers", 1))
    link = conn.driver.link
    link.consume(queue_name, timeout=15)
    wait_for(lambda: _consumers(queue_name) == 1, timeout=10, what="one consumer")

    def restart_twice() -> None:
        # As after a broker cancel: forget the tag, then two restarts in one loop turn.
        tag = link._consumer_tags.pop(queue_name)
        link._con.basic_cancel(tag)
        link._start_consumer(queue_name)
        link._start_consumer(queue_name)

    link.submit(restart_twice)
    wait_for(lambda: link.consuming(queue_name), timeout=10, what="consuming again")
    deadline = time.monotonic() + 1.0  # let a second basic.consume, if any, land
    while time.monotonic() < deadline:
        assert _consumers(queue_name) <= 1
        time.sleep(0.1)
    assert _consumers(queue_name) == 1

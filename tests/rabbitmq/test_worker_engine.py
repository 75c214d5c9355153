"""The worker engine on RabbitMQ: time limits while other messages flow, and
``until_empty`` returning right after the last message (``pashq_queue_empty``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from core import engine_messages as em
from pashq import Worker
from pashq.connection import Connection

pytestmark = pytest.mark.rabbitmq


@pytest.mark.parametrize("cls", [em.Hangs, em.AsyncHangs], ids=["sync", "async"])
def test_a_handler_past_its_time_limit_is_retried_then_dead_lettered(
    connect: Callable[..., Connection],
    queue_name: str,
    cls: type[em.Hangs] | type[em.AsyncHangs],
) -> None:
    conn = connect()
    key, others = uuid.uuid4().hex, uuid.uuid4().hex
    hang_id = conn.dispatch(queue_name, cls(key))
    conn.dispatch_many(queue_name, [em.Sleeps(others, 0.02) for _ in range(30)])
    started = time.monotonic()
    worker = Worker(queue_name, connection=conn, concurrency=2, install_signal_handlers=False)
    stats = worker.run(until_empty=True)
    assert time.monotonic() - started < 15  # two 10 s attempts would take 20 s
    assert stats.acked == 30 and em.count(others) == 30
    assert stats.retried == 1 and stats.dead_lettered == 1 and stats.timed_out == 2
    [dead] = conn.failed(queue_name)
    assert dead.id == hang_id
    assert "time limit of 1 s exceeded" in dead.reason, dead.reason


def test_until_empty_returns_at_once_after_the_last_message(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    conn = connect()
    key = uuid.uuid4().hex
    conn.dispatch_many(queue_name, [em.Quick(key, n) for n in range(300)])
    worker = Worker(
        queue_name, connection=conn, concurrency=4, poll_timeout=5.0, install_signal_handlers=False
    )
    started = time.monotonic()
    stats = worker.run(until_empty=True)
    assert stats.acked == 300 and em.count(key) == 300
    # Without the driver's answer the run ends one 5 s poll_timeout after the last ack.
    assert time.monotonic() - started < 5.0

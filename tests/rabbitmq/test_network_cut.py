"""Network cuts through a TCP proxy of the test's own (the shared broker keeps running).

The proxy forwards a local port to the broker; ``cut()`` drops every connection through
it, as a network failure or a broker restart would, without touching the broker.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest
from tcp_proxy import TcpProxy as Proxy

import pashq
from pashq.connection import Connection
from pashq.errors import DriverError
from pashq.testing import wait_for

from .conftest import broker_address, raw_connection
from .rabbitmq_test_messages import Recorded, seen

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    found = Proxy(broker_address())
    yield found
    found.close()


def _consumers(queue: str) -> int:
    raw = raw_connection()
    try:
        return int(raw.channel().queue_declare(queue, passive=True).method.consumer_count)
    finally:
        raw.close()


def test_after_a_network_cut_the_queue_has_one_consumer_again(
    connect: Callable[..., Connection], queue_name: str, proxy: Proxy
) -> None:
    """A cut: the driver reconnects, restarts its consumer once, and delivers again."""
    conn = connect(url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", reconnect_delay_max=0.5)
    conn.dispatch(queue_name, Recorded("cut", 1))
    (first,) = wait_for(
        lambda: conn.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=0.5), timeout=10
    )
    conn.hook.pashq_ack(queue=queue_name, deliveries=[first])
    link = conn.driver.link
    assert _consumers(queue_name) == 1
    proxy.cut()
    wait_for(
        lambda: link.connections == 2 and link.consuming(queue_name),
        timeout=30,
        what="reconnected and consuming",
    )
    message_id = conn.dispatch(queue_name, Recorded("cut", 2))
    (again,) = wait_for(
        lambda: conn.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=0.5), timeout=15
    )
    assert again.id == message_id
    conn.hook.pashq_ack(queue=queue_name, deliveries=[again])
    wait_for(lambda: _consumers(queue_name) == 1, timeout=10, what="one consumer")


def test_batch_cut_mid_publish_stores_every_returned_id(
    connect: Callable[..., Connection], queue_name: str, proxy: Proxy
) -> None:
    """A cut while a batch is in flight: the push still returns only stored ids (the
    unconfirmed ones are published again on the new connection)."""
    conn = connect(
        url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F",
        reconnect_delay_max=0.5,
        publish_timeout=60.0,
    )
    conn.hook.pashq_declare(queue=queue_name)
    link = conn.driver.link
    result: list[list[str]] = []
    pusher = threading.Thread(
        target=lambda: result.append(
            conn.dispatch_many(queue_name, [Recorded("cut", n) for n in range(10_000)])
        )
    )
    pusher.start()
    wait_for(lambda: len(link._unconfirmed) > 100 or result, timeout=20, what="in flight")
    proxy.cut()
    cut_mid_batch = not result
    pusher.join(90)
    assert result, "the push did not return"
    assert cut_mid_batch and link.connections >= 2
    (ids,) = result
    raw = raw_connection()
    try:
        channel = raw.channel()
        found: set[str] = set()
        while True:
            method, properties, _ = channel.basic_get(queue_name, auto_ack=True)
            if method is None:
                break
            found.add(properties.message_id)
    finally:
        raw.close()
    assert set(ids) <= found


def test_outage_is_reported_then_recovered(
    connect: Callable[..., Connection], queue_name: str, proxy: Proxy
) -> None:
    """While the broker cannot be reached, a push past publish_timeout raises naming the
    id and a pull says no consumer is attached; both work again once it is back."""
    conn = connect(
        url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F",
        publish_timeout=2.0,
        reconnect_delay_max=0.5,
    )
    conn.dispatch(queue_name, Recorded("outage", 0))
    conn.hook.pashq_pull(queue=queue_name, max_messages=10, timeout=1.0)
    link = conn.driver.link
    proxy.outage()
    try:
        wait_for(lambda: not link.ready, timeout=30, what="the link to notice")
        with pytest.raises(DriverError) as pushed:
            conn.dispatch(queue_name, Recorded("outage", 1))
        assert "did not confirm 1 message(s)" in str(pushed.value)
        with pytest.raises(DriverError) as pulled:
            conn.hook.pashq_pull(queue=queue_name, max_messages=10, timeout=0.5)
        assert queue_name in str(pulled.value)
    finally:
        proxy.restore()
    wait_for(lambda: link.ready, timeout=30, what="the link to reconnect")
    conn.dispatch(queue_name, Recorded("outage", 2))


def test_worker_resumes_after_an_outage_and_finishes_the_queue(
    connect: Callable[..., Connection], queue_name: str, proxy: Proxy
) -> None:
    """A worker consuming through an outage reconnects, with one consumer, and processes
    every message."""
    conn = connect(url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F", reconnect_delay_max=0.5)
    key = uuid.uuid4().hex
    total = 600
    conn.dispatch_many(queue_name, [Recorded(key, n, 0.002) for n in range(total)])
    worker = pashq.Worker(
        queue_name, connection=conn, install_signal_handlers=False, poll_timeout=0.5
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: len(seen(key)) >= 100, timeout=60, what="100 processed messages")
        proxy.outage()
        wait_for(lambda: not conn.driver.link.ready, timeout=30, what="the link to notice")
        proxy.restore()
        wait_for(
            lambda: set(seen(key)) == set(range(total)),
            timeout=120,
            what="every message processed after the outage",
        )
        assert _consumers(queue_name) == 1
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert conn.driver.link.connections >= 2

"""Behaviour of the RabbitMQ driver beyond the contract: options, errors, topology, recovery."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable

import pika
import pika.exceptions
import pytest

from pashq.connection import Connection
from pashq.errors import ConfigError, DriverError, QueueNotFoundError
from pashq.testing import make_connection, wait_for
from pashq_rabbitmq.topology import delay_milliseconds

from .conftest import MANAGEMENT_URL, URL, raw_connection
from .rabbitmq_test_messages import Recorded

pytestmark = pytest.mark.rabbitmq


def _pull_one(conn: Connection, queue: str, timeout: float = 10.0) -> list:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = conn.hook.pashq_pull(queue=queue, max_messages=10, timeout=1.0)
        if got:
            return got  # type: ignore[no-any-return]
    return []


# -- options and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"queue_type": "fifo"}, "'queue_type' must be one of 'classic', 'quorum'"),
        ({"declare": "never"}, "'declare' must be one of 'auto', 'passive'"),
        ({"url": "http://localhost"}, "'url' must be an amqp:// or amqps:// URL"),
        ({"prefetch": 0}, "'prefetch' must be > 0"),
        ({"prefetch": "ten"}, "'prefetch' must be int"),
        ({"exchange": "x"}, "unknown option(s) exchange"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(
    options: dict[str, object], text: str
) -> None:
    """A wrong option names the key and the connection table."""
    with pytest.raises(ConfigError) as caught:
        make_connection({"type": "rabbitmq", **options})
    assert text in str(caught.value)
    assert "[queues.contract]" in str(caught.value)


def test_unreachable_broker_raises_clear_error_without_password() -> None:
    """Publishing to a broker that does not answer fails naming the address, never the
    password, and never reports success."""
    conn = make_connection(
        {"type": "rabbitmq", "url": "amqp://app:s3cret@127.0.0.1:1/%2F", "publish_timeout": 1.0}
    )
    try:
        with pytest.raises(DriverError) as caught:
            conn.dispatch("nowhere", Recorded("x", 1))
        text = str(caught.value)
        assert "127.0.0.1:1" in text
        assert "s3cret" not in text and "s3cret" not in repr(conn.driver)
    finally:
        conn.close()


def test_passive_mode_requires_existing_queues(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """declare = "passive" never creates the work queue; it says which one is missing."""
    passive = connect(declare="passive")
    with pytest.raises(QueueNotFoundError) as caught:
        passive.hook.pashq_declare(queue=queue_name)
    assert queue_name in str(caught.value)
    connect().hook.pashq_declare(queue=queue_name)  # created by an "auto" connection
    passive.hook.pashq_declare(queue=queue_name)
    message_id = passive.dispatch(queue_name, Recorded("p", 1))
    (delivery,) = _pull_one(passive, queue_name)
    assert delivery.id == message_id
    passive.hook.pashq_ack(queue=queue_name, deliveries=[delivery])


def test_existing_queue_of_other_type_is_a_clear_error(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """Declaring a quorum queue over a classic one explains the mismatch."""
    connect().hook.pashq_declare(queue=queue_name)
    with pytest.raises(DriverError) as caught:
        connect(queue_type="quorum").hook.pashq_declare(queue=queue_name)
    assert "queue_type" in str(caught.value) and queue_name in str(caught.value)


# -- topology and delays ----------------------------------------------------------------------


def test_delay_is_rounded_to_two_significant_digits_of_milliseconds() -> None:
    """Delay queues are shared by close delays; rounding is upwards only."""
    assert delay_milliseconds(0.0004) == 1
    assert delay_milliseconds(0.05) == 50
    assert delay_milliseconds(0.123) == 130
    assert delay_milliseconds(1.234) == 1300
    assert delay_milliseconds(2.0) == 2000
    assert delay_milliseconds(0) == 0


def test_delayed_dispatch_is_held_by_a_ttl_queue(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """delay = 2.5 s goes through `<queue>.delay.2500`, dead-lettered back when due."""
    conn = connect()
    started = time.monotonic()
    message_id = conn.dispatch(queue_name, Recorded("d", 1), delay=2.5)
    assert f"{queue_name}.delay.2500" in conn.driver.declared_queues
    raw = raw_connection()
    try:
        declared = raw.channel().queue_declare(f"{queue_name}.delay.2500", passive=True)
        assert declared.method.message_count == 1
    finally:
        raw.close()
    (delivery,) = _pull_one(conn, queue_name)
    assert time.monotonic() - started >= 2.4
    assert delivery.id == message_id and delivery.attempts == 1
    conn.hook.pashq_ack(queue=queue_name, deliveries=[delivery])


# -- settlement ---------------------------------------------------------------------------------


def test_acks_of_deliveries_from_a_lost_channel_are_dropped(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """When the consume channel is lost, old deliveries cannot be acked; the broker
    redelivers them, counting the attempt."""
    conn = connect()
    message_id = conn.dispatch(queue_name, Recorded("lost", 1))
    (first,) = _pull_one(conn, queue_name)
    link = conn.driver.link
    epoch = link.epoch
    link.submit(lambda: link._con.close())
    wait_for(lambda: link.epoch > epoch and link.consuming(queue_name), timeout=15)
    conn.hook.pashq_ack(queue=queue_name, deliveries=[first])  # quietly dropped
    conn.hook.pashq_nack(queue=queue_name, deliveries=[first], delay=0.0)  # likewise
    (again,) = _pull_one(conn, queue_name)
    assert again.id == message_id and again.attempts == 2
    conn.hook.pashq_ack(queue=queue_name, deliveries=[again])
    wait_for(lambda: conn.stats(queue_name).ready == 0, timeout=10)


def test_acks_are_batched_with_multiple_true_in_any_order(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """Acking a batch out of order settles all of it and nothing else."""
    conn = connect(prefetch=20)
    conn.dispatch_many(queue_name, [Recorded("acks", n) for n in range(10)])
    got: list = []  # type: ignore[type-arg]
    while len(got) < 10:
        got += _pull_one(conn, queue_name)
    conn.hook.pashq_ack(queue=queue_name, deliveries=[got[3], got[0], got[1], got[7]])
    conn.hook.pashq_ack(queue=queue_name, deliveries=[got[9], got[2]])
    wait_for(lambda: conn.driver.link.unacked() == 4, timeout=10, what="4 unacked")
    conn.hook.pashq_ack(queue=queue_name, deliveries=[got[4], got[5], got[6], got[8]])
    wait_for(lambda: conn.driver.link.unacked() == 0, timeout=10, what="all acked")
    conn.close()
    assert connect().stats(queue_name).ready == 0


def test_dead_letter_keeps_reason_traceback_and_attempts(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A dead letter carries its reason, traceback, attempts and time; stats count it."""
    conn = connect()
    message_id = conn.dispatch(queue_name, Recorded("dead", 1))
    (delivery,) = _pull_one(conn, queue_name)
    conn.hook.pashq_dead_letter(
        queue=queue_name, delivery=delivery, reason="ValueError: nope", traceback="Traceback…"
    )
    (dead,) = wait_for(lambda: conn.failed(queue_name), timeout=10)
    assert dead.id == message_id and dead.reason == "ValueError: nope"
    assert dead.traceback == "Traceback…" and dead.attempts == 1
    assert dead.failed_at is not None and dead.body == delivery.body
    stats = conn.stats(queue_name)
    assert stats.failed == 1 and stats.ready == 0
    assert conn.failed(queue_name) == [dead]  # listing does not consume


def test_failed_retry_and_purge_by_id(connect: Callable[..., Connection], queue_name: str) -> None:
    """Retry and purge can pick dead letters by id."""
    conn = connect()
    ids = conn.dispatch_many(queue_name, [Recorded("ids", n) for n in range(3)])
    got: list = []  # type: ignore[type-arg]
    while len(got) < 3:
        got += _pull_one(conn, queue_name)
    for delivery in got:
        conn.hook.pashq_dead_letter(queue=queue_name, delivery=delivery, reason="r", traceback=None)
    wait_for(lambda: len(conn.failed(queue_name)) == 3, timeout=10)
    assert conn.retry_failed(queue_name, [ids[1]]) == 1
    (back,) = _pull_one(conn, queue_name)
    assert back.id == ids[1] and back.attempts == 1
    conn.hook.pashq_ack(queue=queue_name, deliveries=[back])
    assert conn.purge_failed(queue_name, [ids[0]]) == 1
    assert [d.id for d in conn.failed(queue_name)] == [ids[2]]
    assert conn.purge_failed(queue_name) == 1
    assert conn.failed(queue_name) == []


def test_consumer_restarts_when_the_broker_cancels_it(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A queue deleted under a consumer: the consumer is restarted (queue declared again),
    and publishing declares the queue again after one clear failure at most."""
    conn = connect()
    conn.dispatch(queue_name, Recorded("cancel", 1))
    (first,) = _pull_one(conn, queue_name)
    conn.hook.pashq_ack(queue=queue_name, deliveries=[first])
    raw = raw_connection()
    try:
        raw.channel().queue_delete(queue_name)
    finally:
        raw.close()
    link = conn.driver.link
    wait_for(lambda: link.consuming(queue_name), timeout=15, what="consumer restarted")
    message_id = conn.dispatch(queue_name, Recorded("cancel", 2))
    (again,) = _pull_one(conn, queue_name)
    assert again.id == message_id
    conn.hook.pashq_ack(queue=queue_name, deliveries=[again])


def test_unroutable_publish_names_the_ids(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A message the broker returns as unroutable is an error naming its id."""
    conn = connect()
    conn.hook.pashq_declare(queue=queue_name)
    raw = raw_connection()
    try:
        raw.channel().queue_delete(queue_name)
    finally:
        raw.close()
    with pytest.raises(DriverError) as caught:
        conn.dispatch(queue_name, Recorded("gone", 1))
    assert "unroutable" in str(caught.value)
    # The next dispatch declares the queue again.
    conn.dispatch(queue_name, Recorded("gone", 2))
    assert conn.stats(queue_name).ready == 1


def test_stats_of_missing_queue_is_queue_not_found(connect: Callable[..., Connection]) -> None:
    """stats on a queue that does not exist says so."""
    with pytest.raises(QueueNotFoundError):
        connect().stats(f"missing-{uuid.uuid4().hex[:8]}")


def test_stats_with_management_api_count_unacked_messages(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """With management_url, stats report unacknowledged (in-flight) messages too.

    Needs the management plugin (`rabbitmq-plugins enable rabbitmq_management`); the
    broker refreshes these figures every few seconds, hence the waits.
    """
    conn = connect(management_url=MANAGEMENT_URL)
    conn.dispatch_many(queue_name, [Recorded("mgmt", i) for i in range(3)])
    wait_for(lambda: conn.stats(queue_name).ready == 3, timeout=30, what="3 ready")
    held = _pull_one(conn, queue_name)
    assert held
    wait_for(
        lambda: conn.stats(queue_name).in_flight == len(held),
        timeout=30,
        what=f"{len(held)} unacknowledged",
    )
    conn.hook.pashq_ack(queue=queue_name, deliveries=held)
    with pytest.raises(QueueNotFoundError):
        conn.stats(f"missing-{uuid.uuid4().hex[:8]}")


def test_management_url_must_be_http(connect: Callable[..., Connection]) -> None:
    """A management_url that is not http(s) is a config error naming the key."""
    with pytest.raises(ConfigError, match="'management_url' must be an http"):
        connect(management_url="amqp://127.0.0.1:15672")


def test_plain_pika_consumer_sees_attempts_header_on_retry(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A retried copy carries x-pashq-attempts for any consumer to read."""
    conn = connect()
    conn.dispatch(queue_name, Recorded("hdr", 1))
    (delivery,) = _pull_one(conn, queue_name)
    conn.hook.pashq_nack(queue=queue_name, deliveries=[delivery], delay=0.0)
    conn.close()
    raw = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        method, properties, _ = raw.channel().basic_get(queue_name, auto_ack=True)
    finally:
        raw.close()
    assert method is not None
    assert properties.headers["x-pashq-attempts"] == 1


@pytest.mark.parametrize(("queue_type", "third"), [("quorum", 3), ("classic", 2)])
def test_redeliveries_after_crashes_count_attempts(
    connect: Callable[..., Connection], queue_name: str, queue_type: str, third: int
) -> None:
    """Quorum queues count every redelivery (x-delivery-count); classic ones flag one."""
    conn = connect(queue_type=queue_type)
    conn.dispatch(queue_name, Recorded("crash", 1))
    attempts = []
    for _ in range(2):
        crashed = connect(queue_type=queue_type)
        (delivery,) = _pull_one(crashed, queue_name)
        attempts.append(delivery.attempts)
        crashed.close()
    (last,) = _pull_one(conn, queue_name)
    attempts.append(last.attempts)
    conn.hook.pashq_ack(queue=queue_name, deliveries=[last])
    assert attempts == [1, 2, third]


def test_forked_child_opens_its_own_connection(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """After a fork (pre-loading web servers), dispatching in the child works."""
    conn = connect()
    conn.dispatch(queue_name, Recorded("fork", 1))
    pid = os.fork()
    if pid == 0:  # the child: must not return into pytest
        code = 1
        try:
            conn.dispatch(queue_name, Recorded("fork", 2))
            conn.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    wait_for(lambda: conn.stats(queue_name).ready == 2, timeout=10, what="both messages")


def test_without_confirms_messages_still_arrive(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """confirm = false publishes without waiting for the broker; messages arrive."""
    conn = connect(confirm=False)
    ids = conn.dispatch_many(queue_name, [Recorded("noconfirm", n) for n in range(200)])
    got: list = []  # type: ignore[type-arg]
    deadline = time.monotonic() + 20
    while len(got) < 200 and time.monotonic() < deadline:
        batch = conn.hook.pashq_pull(queue=queue_name, max_messages=100, timeout=1.0)
        conn.hook.pashq_ack(queue=queue_name, deliveries=batch)
        got += batch
    assert sorted(d.id for d in got) == sorted(ids)


def test_stats_on_an_undeclared_queue_does_not_advise_the_default_declare(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    conn = connect()
    with pytest.raises(QueueNotFoundError) as caught:
        conn.stats(queue_name)
    text = str(caught.value)
    assert 'declare it (declare = "auto")' not in text
    assert "nothing has declared it yet" in text

"""Publishes the broker or the encoder refuses: fail those at once, store the rest.

RabbitMQ answers some publishes by closing the channel (406 PRECONDITION_FAILED for a
message over ``max_message_size`` or a foreign ``user_id``; 403 ACCESS_REFUSED). Publishing
such a message again closes the channel again, so the driver fails it at once and
publishes the others of the batch, reporting both (``PartialPushError``).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator

import pika
import pika.exceptions
import pytest

from pashq.connection import Connection
from pashq.errors import DriverError, MessageTooLargeError, PartialPushError
from pashq.testing import wait_for
from pashq_rabbitmq.link import BrokerLink, Publish, PublishJob

from .conftest import rabbitmqctl, raw_connection
from .rabbitmq_test_messages import Recorded

pytestmark = pytest.mark.rabbitmq


def _publish(link: BrokerLink, items: list[Publish], timeout: float = 20.0) -> float:
    """Publish through the link; return how long it took (it raises what it raises)."""
    started = time.monotonic()
    try:
        link.publish(items, timeout=timeout, what="test publish")
    finally:
        elapsed = time.monotonic() - started
    return elapsed


def _ids_on(queue: str) -> set[str]:
    """The message_id of every message ready on ``queue`` (read and put back)."""
    raw = raw_connection()
    try:
        channel = raw.channel()
        found: set[str] = set()
        while True:
            method, properties, _ = channel.basic_get(queue)
            if method is None:
                return found
            found.add(properties.message_id)
    finally:
        raw.close()  # unacked: the broker puts them back


def _plain(queue: str, message_id: str, **properties: object) -> Publish:
    return Publish(
        queue,
        message_id.encode(),
        pika.BasicProperties(message_id=message_id, **properties),
        message_id,
    )


def test_publish_refused_by_channel_close_fails_at_once_and_stores_the_rest(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A message the broker refuses by closing the channel (here a foreign user_id) fails
    at once with the broker's reason; the others of the batch are stored, once each."""
    conn = connect(publish_timeout=20.0)
    conn.hook.pashq_declare(queue=queue_name)
    link = conn.driver.link
    items = [
        _plain(queue_name, "first"),
        _plain(queue_name, "refused", user_id="somebody-else"),
        _plain(queue_name, "last"),
    ]
    started = time.monotonic()
    with pytest.raises(PartialPushError) as caught:
        _publish(link, items)
    assert time.monotonic() - started < 10.0  # not retried until publish_timeout
    assert sorted(caught.value.stored) == ["first", "last"]
    assert caught.value.not_stored == ["refused"]
    assert "PRECONDITION_FAILED" in str(caught.value) and "refused" in str(caught.value)
    # Messages before the refused one may be stored twice (at-least-once): the broker
    # closed the channel before confirming them, so they are published again.
    assert _ids_on(queue_name) >= {"first", "last"}
    assert "refused" not in _ids_on(queue_name)
    # The link goes on publishing normally.
    message_id = conn.dispatch(queue_name, Recorded("refusal", 1))
    assert message_id in _ids_on(queue_name)


def test_single_refused_publish_is_a_driver_error_naming_it(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """Alone in its batch, the refused message is a DriverError naming it, at once."""
    conn = connect(publish_timeout=20.0)
    conn.hook.pashq_declare(queue=queue_name)
    started = time.monotonic()
    with pytest.raises(DriverError) as caught:
        _publish(conn.driver.link, [_plain(queue_name, "alone", user_id="somebody-else")])
    assert time.monotonic() - started < 10.0
    assert not isinstance(caught.value, PartialPushError)
    assert "alone" in str(caught.value) and "PRECONDITION_FAILED" in str(caught.value)


def test_unencodable_publish_fails_at_once_and_stores_the_rest(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A message pika cannot encode (a float header) fails at once; the batch goes on."""
    conn = connect(publish_timeout=20.0)
    conn.hook.pashq_declare(queue=queue_name)
    items = [
        _plain(queue_name, "good"),
        _plain(queue_name, "float-header", headers={"x-ratio": 1.5}),
    ]
    started = time.monotonic()
    with pytest.raises(PartialPushError) as caught:
        _publish(conn.driver.link, items)
    assert time.monotonic() - started < 10.0
    assert caught.value.stored == ["good"] and caught.value.not_stored == ["float-header"]
    assert "cannot be encoded" in str(caught.value)
    wait_for(lambda: conn.stats(queue_name).ready == 1, timeout=10, what="1 stored")


def test_size_refusal_learns_the_broker_limit(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """The broker's "message size N is larger than configured max size M" fails the
    unconfirmed messages over M as MessageTooLargeError, and later pushes over M fail
    before publishing.

    ``max_message_size`` is a broker-wide setting that other tests depend on, so this
    test hands the link the broker's channel-close reason instead of lowering it.
    """
    conn = connect()
    link = conn.driver.link
    job = PublishJob([_plain(queue_name, "big"), _plain(queue_name, "b")])
    job.todo.clear()
    job.pending.update({0, 1})
    reason = pika.exceptions.ChannelClosedByBroker(
        406, "PRECONDITION_FAILED - message size 3 is larger than configured max size 2"
    )

    def refuse() -> None:
        link._unconfirmed.clear()
        link._unconfirmed[1] = (job, 0)
        link._settle_refusal(reason)
        link._unconfirmed.clear()

    link.submit(refuse)
    wait_for(lambda: job.failed == [0], timeout=10, what="the large one failed")
    assert 0 in job.too_large and 1 in job.pending
    assert link.max_message_size == 2
    with pytest.raises(MessageTooLargeError, match="at most 2"):
        conn.dispatch(queue_name, Recorded("big", 1))


@pytest.fixture
def reject_after_two(queue_name: str) -> Iterator[None]:
    """A policy on this test's queue only: at most 2 ready messages, further publishes
    nacked (``overflow = reject-publish``); removed at teardown."""
    policy = f"pashq-test-{uuid.uuid4().hex[:12]}"
    definition = json.dumps({"max-length": 2, "overflow": "reject-publish"})
    pattern = f"^{re.escape(queue_name)}$"
    rabbitmqctl("set_policy", policy, pattern, definition, "--apply-to", "queues")
    try:
        yield
    finally:
        rabbitmqctl("clear_policy", policy)


def test_batch_partly_nacked_by_the_broker_is_a_partial_push_error(
    connect: Callable[..., Connection], queue_name: str, reject_after_two: None
) -> None:
    """A batch the broker accepts in part (a max-length policy rejecting publishes) raises
    PartialPushError listing the stored and the not stored ids."""
    conn = connect()
    conn.hook.pashq_declare(queue=queue_name)
    messages = [Recorded("nacked", n) for n in range(5)]
    with pytest.raises(PartialPushError) as caught:
        conn.dispatch_many(queue_name, messages)
    error = caught.value
    assert len(error.stored) == 2 and len(error.not_stored) == 3
    assert "rejected by the broker (nack)" in str(error)
    assert _ids_on(queue_name) == set(error.stored)


def test_failed_retry_partly_refused_keeps_only_the_dead_letters_not_retried(
    connect: Callable[..., Connection], queue_name: str, reject_after_two: None
) -> None:
    """`failed retry` into a queue that takes only 2 more: the 2 retried leave the failed
    queue, the 2 refused stay there (no copy in both places, none in neither)."""
    conn = connect()
    raw = raw_connection()
    try:
        channel = raw.channel()
        channel.queue_declare(f"{queue_name}.failed", durable=True)
        for n in range(4):
            channel.basic_publish(
                "",
                f"{queue_name}.failed",
                json.dumps({"v": 1, "id": f"dead-{n}", "type": "t", "body": {}}).encode(),
                pika.BasicProperties(delivery_mode=2, headers={"x-pashq-reason": "r"}),
            )
    finally:
        raw.close()
    with pytest.raises(PartialPushError) as caught:
        conn.retry_failed(queue_name)
    assert len(caught.value.stored) == 2
    left = {d.id for d in conn.failed(queue_name)}
    assert left == set(caught.value.not_stored) and len(left) == 2
    assert _ids_on(queue_name) == set(caught.value.stored)


@pytest.fixture
def failed_queue_refuses(queue_name: str) -> Iterator[None]:
    """A policy on this test's failed queue only: every publish to it is nacked."""
    policy = f"pashq-test-{uuid.uuid4().hex[:12]}"
    definition = json.dumps({"max-length": 0, "overflow": "reject-publish"})
    pattern = f"^{re.escape(queue_name)}\\.failed$"
    rabbitmqctl("set_policy", policy, pattern, definition, "--apply-to", "queues")
    try:
        yield
    finally:
        rabbitmqctl("clear_policy", policy)


def test_dead_letter_refused_by_the_broker_leaves_the_original_on_its_queue(
    connect: Callable[..., Connection], queue_name: str, failed_queue_refuses: None
) -> None:
    """The broker nacks the dead-letter copy: the hook raises (the worker counts an
    error) and the original is requeued, not acked."""
    conn = connect()
    message_id = conn.dispatch(queue_name, Recorded("refused-copy", 1))
    (delivery,) = wait_for(
        lambda: conn.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=0.5), timeout=10
    )
    with pytest.raises(DriverError, match="rejected by the broker"):
        conn.hook.pashq_dead_letter(queue=queue_name, delivery=delivery, reason="r", traceback=None)
    (again,) = wait_for(
        lambda: conn.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=0.5), timeout=10
    )
    assert again.id == message_id and again.attempts == 2  # requeued: redelivered
    conn.hook.pashq_ack(queue=queue_name, deliveries=[again])
    assert conn.failed(queue_name) == []

"""SQS-specific behaviour of the driver, against moto's server over HTTP."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from pashq import Connection, Delivery, OutgoingMessage
from pashq.envelope import Envelope, encode_envelope, new_message_id, utc_timestamp
from pashq.errors import (
    ConfigError,
    DriverError,
    MessageTooLargeError,
    PartialPushError,
    QueueNotFoundError,
)
from pashq.testing import drain, make_connection, wait_for
from pashq_sqs import IgnoredAttributeWarning, Receipt

pytestmark = pytest.mark.sqs

OpenSQS = Callable[..., Connection]


def outgoing(
    body: Any = None,
    *,
    delay: float = 0.0,
    group_id: str | None = None,
    deduplication_id: str | None = None,
) -> OutgoingMessage:
    envelope = Envelope(new_message_id(), "tests.sqs.raw", body or {"n": 0}, utc_timestamp(), {})
    return OutgoingMessage(
        envelope.id, envelope.type, encode_envelope(envelope), delay, group_id, deduplication_id
    )


def push(conn: Connection, queue: str, *messages: OutgoingMessage) -> list[str]:
    ids: list[str] = conn.hook.pashq_push(queue=queue, messages=list(messages), options={})
    return ids


def pull(conn: Connection, queue: str, n: int = 10, timeout: float = 5.0) -> list[Delivery]:
    deadline = time.monotonic() + timeout
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        got: list[Delivery] = conn.hook.pashq_pull(
            queue=queue, max_messages=n, timeout=min(remaining, 2.0)
        )
        if got or remaining <= 0:
            return got


def record_calls(conn: Connection) -> list[tuple[str, dict[str, Any]]]:
    """Record every SQS action (and its parameters) the driver's client sends."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def before(params: dict[str, Any], model: Any, **kwargs: Any) -> None:
        calls.append((model.name, params))

    conn.driver.client.meta.events.register("before-parameter-build.sqs", before)
    return calls


# -- configuration ------------------------------------------------------------------------


def test_unknown_option_is_a_config_error_naming_it(open_sqs: OpenSQS) -> None:
    with pytest.raises(ConfigError, match="visibility_timout"):
        open_sqs(visibility_timout=5)


def test_wait_time_over_20_seconds_is_rejected(open_sqs: OpenSQS) -> None:
    with pytest.raises(ConfigError, match="'wait_time' must be between 0 and 20"):
        open_sqs(wait_time=21)


def test_queue_urls_must_be_urls(open_sqs: OpenSQS) -> None:
    with pytest.raises(ConfigError, match=r"queue_urls\.orders"):
        open_sqs(queue_urls={"orders": "orders"})


def test_missing_queue_is_not_created_by_default(open_sqs: OpenSQS, queue_name: str) -> None:
    conn = open_sqs(create_queues=False)
    with pytest.raises(QueueNotFoundError, match=rf"{queue_name}.*create_queues = true"):
        push(conn, queue_name, outgoing())


def test_unreachable_endpoint_names_it_without_credentials() -> None:
    conn = make_connection(
        {"type": "sqs", "region": "us-east-1", "endpoint_url": "http://user:s3cret@127.0.0.1:9"}
    )
    try:
        with pytest.raises(DriverError) as info:
            push(conn, "anything", outgoing())
        assert "127.0.0.1:9" in str(info.value)
        assert "s3cret" not in str(info.value)
    finally:
        conn.close()


def test_missing_region_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="no AWS region"):
        make_connection({"type": "sqs"})


def test_options_repr_hides_endpoint_credentials(open_sqs: OpenSQS) -> None:
    conn = open_sqs()
    options = attrs.evolve(conn.driver.options, endpoint_url="http://me:s3cret@127.0.0.1:1")
    assert "s3cret" not in repr(options)


# -- queues, redrive, attempts ------------------------------------------------------------


def test_create_queues_adds_dead_letter_queue_with_redrive_policy(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    conn = open_sqs(max_attempts=4)
    conn.hook.pashq_declare(queue=queue_name)
    url = sqs_client.get_queue_url(QueueName=queue_name)["QueueUrl"]
    attributes = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    policy = json.loads(attributes["Attributes"]["RedrivePolicy"])
    assert policy["maxReceiveCount"] == 4
    assert policy["deadLetterTargetArn"].endswith(f":{queue_name}-failed")
    assert attributes["Attributes"]["VisibilityTimeout"] == "2"
    dlq = sqs_client.get_queue_url(QueueName=f"{queue_name}-failed")["QueueUrl"]
    dlq_attributes = sqs_client.get_queue_attributes(
        QueueUrl=dlq, AttributeNames=["MessageRetentionPeriod"]
    )["Attributes"]
    assert dlq_attributes["MessageRetentionPeriod"] == "1209600"


def test_prefix_and_fifo_option_shape_sqs_names(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    conn = open_sqs(prefix="app-", fifo=True)
    conn.hook.pashq_declare(queue=queue_name)
    sqs_client.get_queue_url(QueueName=f"app-{queue_name}.fifo")
    sqs_client.get_queue_url(QueueName=f"app-{queue_name}-failed.fifo")


def test_nack_changes_visibility_so_receive_count_is_the_attempt(
    open_sqs: OpenSQS, queue_name: str
) -> None:
    conn = open_sqs()
    push(conn, queue_name, outgoing())
    (first,) = pull(conn, queue_name)
    conn.hook.pashq_nack(queue=queue_name, deliveries=[first], delay=0.0)
    (second,) = pull(conn, queue_name)
    conn.hook.pashq_nack(queue=queue_name, deliveries=[second], delay=0.0)
    (third,) = pull(conn, queue_name)
    # The same SQS message every time (never re-sent), counted by SQS.
    assert first.receipt.message_id == second.receipt.message_id == third.receipt.message_id
    assert [first.attempts, second.attempts, third.attempts] == [1, 2, 3]
    assert first.lease == 2.0
    conn.hook.pashq_ack(queue=queue_name, deliveries=[third])


def test_message_reaches_dead_letter_queue_after_max_receive_count(
    open_sqs: OpenSQS, queue_name: str
) -> None:
    """Native redrive: a message received maxReceiveCount times without being deleted
    (here: consumers that crash) is moved to the DLQ by SQS itself."""
    conn = open_sqs(max_attempts=2, visibility_timeout=1)
    message = outgoing()
    push(conn, queue_name, message)
    for attempt in (1, 2):
        crashed = open_sqs(max_attempts=2, visibility_timeout=1)
        (delivery,) = pull(crashed, queue_name, timeout=10)
        assert delivery.attempts == attempt
        crashed.close()
    time.sleep(0)  # nothing to wait for: the next receive is what triggers the move
    assert pull(conn, queue_name, timeout=3.0) == []
    dead = wait_for(lambda: conn.failed(queue_name), timeout=10, what="the redriven message")
    assert [d.id for d in dead] == [message.id]
    assert dead[0].body == message.body
    assert "RedrivePolicy" in dead[0].reason


# -- batching and failures ------------------------------------------------------------------


def test_batches_are_split_by_count_and_size(open_sqs: OpenSQS, queue_name: str) -> None:
    conn = open_sqs()
    calls = record_calls(conn)
    messages = [outgoing({"text": "x" * 200_000, "n": i}) for i in range(12)]
    assert push(conn, queue_name, *messages) == [m.id for m in messages]
    sends = [params for action, params in calls if action == "SendMessageBatch"]
    assert len(sends) >= 3  # 12 x ~200 KB: at most 5 fit in 1 MiB
    assert all(len(p["Entries"]) <= 10 for p in sends)
    assert all(sum(len(e["MessageBody"]) for e in p["Entries"]) <= 1_048_576 for p in sends)
    got = drain(conn, queue_name, 12, timeout=60)
    assert sorted(d.id for d in got) == sorted(m.id for m in messages)


def test_partially_failed_send_names_the_failed_ids_and_keeps_the_rest(
    open_sqs: OpenSQS, queue_name: str
) -> None:
    conn = open_sqs()
    conn.hook.pashq_declare(queue=queue_name)

    def break_second_entry(params: dict[str, Any], **kwargs: Any) -> None:
        # A value SQS rejects for one entry only: the server answers with a partial failure.
        params["Entries"][1]["DelaySeconds"] = 901

    conn.driver.client.meta.events.register(
        "before-parameter-build.sqs.SendMessageBatch", break_second_entry
    )
    messages = [outgoing({"n": i}) for i in range(3)]
    with pytest.raises(PartialPushError) as info:
        push(conn, queue_name, *messages)
    assert messages[1].id in str(info.value)
    assert "2 of 3" in str(info.value)
    assert info.value.stored == [messages[0].id, messages[2].id]
    assert info.value.not_stored == [messages[1].id]
    conn.driver.client.meta.events.unregister(
        "before-parameter-build.sqs.SendMessageBatch", break_second_entry
    )
    got = drain(conn, queue_name, 2)
    assert sorted(d.id for d in got) == sorted([messages[0].id, messages[2].id])


def test_push_failing_in_a_later_batch_says_which_messages_were_stored(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    """15 messages are two SendMessageBatch calls; the queue is deleted after the first."""
    conn = open_sqs()
    conn.hook.pashq_declare(queue=queue_name)
    url = sqs_client.get_queue_url(QueueName=queue_name)["QueueUrl"]

    def delete_queue(**kwargs: Any) -> None:
        sqs_client.delete_queue(QueueUrl=url)

    conn.driver.client.meta.events.register("after-call.sqs.SendMessageBatch", delete_queue)
    messages = [outgoing({"n": i}) for i in range(15)]
    with pytest.raises(PartialPushError) as info:
        push(conn, queue_name, *messages)
    assert info.value.stored == [m.id for m in messages[:10]]
    assert info.value.not_stored == [m.id for m in messages[10:]]
    text = str(info.value)
    assert "10 of 15" in text and messages[14].id in text and "does not exist" in text


def test_push_failing_in_its_first_batch_keeps_its_own_error(
    open_sqs: OpenSQS, queue_name: str
) -> None:
    """Nothing was stored: the error is the plain one (here QueueNotFoundError)."""
    conn = open_sqs(create_queues=False)
    with pytest.raises(QueueNotFoundError):
        push(conn, queue_name, *[outgoing({"n": i}) for i in range(15)])


def test_partially_failed_ack_names_the_failed_ids(open_sqs: OpenSQS, queue_name: str) -> None:
    conn = open_sqs()
    push(conn, queue_name, outgoing())
    (good,) = pull(conn, queue_name)
    bogus = Delivery(queue_name, "bogus-id", b"", 1, Receipt("not-a-handle", 0.0, "x"), 2.0)
    with pytest.raises(DriverError, match="bogus-id"):
        conn.hook.pashq_ack(queue=queue_name, deliveries=[good, bogus])
    assert conn.stats(queue_name).in_flight == 0
    assert pull(conn, queue_name, timeout=3.5) == []


def test_oversized_message_fails_at_dispatch_with_size_and_limit(
    open_sqs: OpenSQS, queue_name: str
) -> None:
    conn = open_sqs()
    small = outgoing()
    big = outgoing({"text": "x" * 1_100_000})
    with pytest.raises(MessageTooLargeError) as info:
        push(conn, queue_name, small, big)
    text = str(info.value)
    assert big.id in text and "1,048,576" in text and f"{len(big.body) + 0:,}"[:5] in text
    assert conn.stats(queue_name).ready == 0  # nothing of the batch was sent


def test_binary_body_round_trips(open_sqs: OpenSQS, queue_name: str) -> None:
    conn = open_sqs()
    message = OutgoingMessage(new_message_id(), "tests.sqs.raw", bytes(range(256)) * 4)
    push(conn, queue_name, message)
    (delivery,) = drain(conn, queue_name, 1)
    assert delivery.body == message.body
    assert delivery.id == message.id


# -- delays ----------------------------------------------------------------------------------


def test_delay_over_900_seconds_is_sent_with_deliver_at(open_sqs: OpenSQS, queue_name: str) -> None:
    conn = open_sqs()
    calls = record_calls(conn)
    before = time.time()
    push(conn, queue_name, outgoing(delay=3600))
    (params,) = [p for action, p in calls if action == "SendMessageBatch"]
    (entry,) = params["Entries"]
    assert entry["DelaySeconds"] == 900
    attribute = entry["MessageAttributes"]["pashq-deliver-at"]
    assert attribute["DataType"] == "String" and attribute["StringValue"].endswith("Z")
    deliver_at = datetime.fromisoformat(attribute["StringValue"])
    assert deliver_at.utcoffset() == timedelta(0)  # ISO 8601 UTC
    assert before + 3599 <= deliver_at.timestamp() <= time.time() + 3601
    assert conn.stats(queue_name).delayed == 1


def test_message_received_before_deliver_at_is_redelayed_not_delivered(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    """What a 900 s hop of a long delay looks like on receive: re-sent, not delivered
    (here with the Unix-time ``Number`` form pashq-sqs 0.1.0 wrote)."""
    conn = open_sqs()
    conn.hook.pashq_declare(queue=queue_name)
    url = sqs_client.get_queue_url(QueueName=queue_name)["QueueUrl"]
    message = outgoing()
    due = time.time() + 4
    sqs_client.send_message(
        QueueUrl=url,
        MessageBody=message.body.decode(),
        MessageAttributes={
            "pashq-id": {"DataType": "String", "StringValue": message.id},
            "pashq-deliver-at": {"DataType": "Number", "StringValue": repr(due)},
        },
    )
    assert pull(conn, queue_name, timeout=1.0) == []
    assert conn.stats(queue_name).delayed == 1  # re-sent with the remaining delay
    (delivery,) = pull(conn, queue_name, timeout=15)
    assert time.time() >= due - 1.0
    assert delivery.id == message.id
    assert delivery.attempts == 1  # re-delaying is not an attempt
    conn.hook.pashq_ack(queue=queue_name, deliveries=[delivery])


def test_visibility_extension_is_capped_at_12_hours_from_receive(
    open_sqs: OpenSQS, queue_name: str
) -> None:
    conn = open_sqs()
    push(conn, queue_name, outgoing())
    (delivery,) = pull(conn, queue_name)
    receipt = delivery.receipt
    delivery.receipt = Receipt(receipt.handle, receipt.received_at - 43_185, receipt.message_id)
    calls = record_calls(conn)
    conn.hook.pashq_extend(queue=queue_name, deliveries=[delivery], seconds=60)
    (params,) = [p for action, p in calls if action == "ChangeMessageVisibilityBatch"]
    assert params["Entries"][0]["VisibilityTimeout"] <= 10
    conn.hook.pashq_ack(queue=queue_name, deliveries=[delivery])


# -- FIFO --------------------------------------------------------------------------------------


def test_fifo_group_and_deduplication_ids_come_from_the_message(
    open_sqs: OpenSQS, queue_name: str
) -> None:
    conn = open_sqs(fifo=True)
    calls = record_calls(conn)
    first = outgoing({"n": 1}, group_id="customer-7", deduplication_id="invoice-42")
    again = outgoing({"n": 2}, group_id="customer-7", deduplication_id="invoice-42")
    plain = outgoing({"n": 3})
    push(conn, queue_name, first, again, plain)
    entries = [e for action, p in calls if action == "SendMessageBatch" for e in p["Entries"]]
    assert [e["MessageGroupId"] for e in entries] == ["customer-7", "customer-7", queue_name]
    assert [e["MessageDeduplicationId"] for e in entries] == [
        "invoice-42",
        "invoice-42",
        plain.id,  # the pashq id: stable when the same dispatch is pushed again
    ]
    got = drain(conn, queue_name, 2)
    assert sorted(d.id for d in got) == sorted([first.id, plain.id])  # `again` deduplicated
    assert pull(conn, queue_name, timeout=1.0) == []


def test_fifo_same_message_pushed_twice_is_stored_once(open_sqs: OpenSQS, queue_name: str) -> None:
    conn = open_sqs(fifo=True)
    message = outgoing()
    push(conn, queue_name, message)
    push(conn, queue_name, message)  # e.g. a producer retrying after a timeout
    assert [d.id for d in drain(conn, queue_name, 1)] == [message.id]
    assert pull(conn, queue_name, timeout=1.0) == []


def test_fifo_content_based_deduplication_is_used_when_the_queue_has_it(
    open_sqs: OpenSQS, sqs_client: Any
) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}.fifo"
    sqs_client.create_queue(
        QueueName=name, Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"}
    )
    conn = open_sqs(create_queues=False)
    calls = record_calls(conn)
    message = outgoing()
    push(conn, name, message)
    push(conn, name, message)
    entries = [e for action, p in calls if action == "SendMessageBatch" for e in p["Entries"]]
    assert all("MessageDeduplicationId" not in e for e in entries)
    assert [d.id for d in drain(conn, name, 1)] == [message.id]
    assert pull(conn, name, timeout=1.0) == []


def test_attributes_a_queue_type_ignores_are_warned_about(
    open_sqs: OpenSQS, queue_name: str
) -> None:
    standard = open_sqs()
    with pytest.warns(IgnoredAttributeWarning, match="deduplication id"):
        push(standard, queue_name, outgoing(deduplication_id="x"))
    fifo = open_sqs(fifo=True)
    with pytest.warns(IgnoredAttributeWarning, match="per-message delay"):
        push(fifo, queue_name, outgoing(delay=5))
    assert len(drain(fifo, queue_name, 1, timeout=5)) == 1


# -- dead letters, stats, least privilege ---------------------------------------------------


def _dead_letter(conn: Connection, queue: str, reason: str) -> OutgoingMessage:
    message = outgoing({"reason": reason})
    push(conn, queue, message)
    (delivery,) = pull(conn, queue)
    conn.hook.pashq_dead_letter(queue=queue, delivery=delivery, reason=reason, traceback="tb")
    return message


def test_dead_letters_keep_reason_attempts_and_traceback(
    open_sqs: OpenSQS, queue_name: str
) -> None:
    conn = open_sqs()
    message = _dead_letter(conn, queue_name, "bad input")
    (dead,) = conn.failed(queue_name)
    assert (dead.id, dead.reason, dead.traceback, dead.attempts) == (
        message.id,
        "bad input",
        "tb",
        1,
    )
    assert dead.failed_at is not None
    assert conn.stats(queue_name).failed == 1
    assert conn.failed(queue_name) != []  # listing twice sees it again (released)


def test_dead_letter_with_hostile_reason_and_traceback_is_stored(
    open_sqs: OpenSQS, queue_name: str
) -> None:
    """Raw text from a third-party caller: NUL, control characters, a lone surrogate and
    a huge traceback are stored (escaped and capped), not a failed send."""
    conn = open_sqs()
    message = outgoing()
    push(conn, queue_name, message)
    (delivery,) = pull(conn, queue_name)
    reason = "bad \x00 \x01 \ud800 " + "r" * 10_000
    traceback = "Traceback\x00\n" + "t" * 200_000 + "\nValueError: \udcff last line"
    conn.hook.pashq_dead_letter(
        queue=queue_name, delivery=delivery, reason=reason, traceback=traceback
    )
    (dead,) = conn.failed(queue_name)
    assert dead.id == message.id
    assert dead.reason.startswith("bad \\x00 \\x01 \\ud800 r") and len(dead.reason) <= 4096
    assert dead.traceback is not None and len(dead.traceback) <= 32_768
    assert dead.traceback.endswith("ValueError: \\udcff last line")


def test_dead_letter_failed_at_is_utc_aware_even_when_written_without_a_zone(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    conn = open_sqs()
    _dead_letter(conn, queue_name, "mine")
    dlq = sqs_client.get_queue_url(QueueName=f"{queue_name}-failed")["QueueUrl"]
    sqs_client.send_message(
        QueueUrl=dlq,
        MessageBody=outgoing().body.decode(),
        MessageAttributes={
            "pashq-failed-at": {"DataType": "String", "StringValue": "2026-12-01T10:00:00"}
        },
    )
    letters = wait_for(
        lambda: len(found := conn.failed(queue_name)) == 2 and found, timeout=20, what="both"
    )
    assert all(d.failed_at is not None and d.failed_at.utcoffset() == timedelta(0) for d in letters)
    assert datetime(2026, 12, 1, 10, tzinfo=UTC) in [d.failed_at for d in letters]


def test_failed_retry_and_purge_by_id(open_sqs: OpenSQS, queue_name: str) -> None:
    conn = open_sqs()
    a, b, c = (_dead_letter(conn, queue_name, f"r{i}") for i in range(3))
    assert conn.retry_failed(queue_name, [b.id]) == 1
    assert [d.id for d in drain(conn, queue_name, 1)] == [b.id]
    assert sorted(d.id for d in conn.failed(queue_name)) == sorted([a.id, c.id])
    assert conn.purge_failed(queue_name, [a.id]) == 1
    assert [d.id for d in conn.failed(queue_name)] == [c.id]


def test_dead_letter_without_a_dead_letter_queue_keeps_the_message(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    sqs_client.create_queue(QueueName=queue_name)
    conn = open_sqs(create_queues=False)
    message = outgoing()
    push(conn, queue_name, message)
    (delivery,) = pull(conn, queue_name)
    with pytest.raises(DriverError, match=rf"{queue_name!r} has no dead-letter queue"):
        conn.hook.pashq_dead_letter(queue=queue_name, delivery=delivery, reason="x", traceback=None)
    (again,) = pull(conn, queue_name, timeout=10)
    assert again.id == message.id


def test_stats_count_ready_delayed_and_in_flight(open_sqs: OpenSQS, queue_name: str) -> None:
    conn = open_sqs(visibility_timeout=30)
    push(conn, queue_name, outgoing(), outgoing(), outgoing(delay=60))
    (held,) = pull(conn, queue_name, n=1)
    stats = conn.stats(queue_name)
    assert (stats.ready, stats.delayed, stats.in_flight, stats.failed) == (1, 1, 1, 0)
    conn.hook.pashq_ack(queue=queue_name, deliveries=[held])


def test_least_privilege_mode_never_lists_looks_up_or_creates_queues(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    """With queue_urls, every hook runs on the configured URLs only."""
    dlq_url = sqs_client.create_queue(QueueName=f"{queue_name}-failed")["QueueUrl"]
    url = sqs_client.create_queue(QueueName=queue_name)["QueueUrl"]
    conn = open_sqs(
        create_queues=False,
        queue_urls={queue_name: url, f"{queue_name}-failed": dlq_url},
    )
    calls = record_calls(conn)
    hook = conn.hook
    hook.pashq_declare(queue=queue_name)
    push(conn, queue_name, outgoing(), outgoing(), outgoing(delay=1))
    deliveries = pull(conn, queue_name)
    hook.pashq_extend(queue=queue_name, deliveries=deliveries, seconds=5)
    hook.pashq_nack(queue=queue_name, deliveries=deliveries[:1], delay=0)
    hook.pashq_ack(queue=queue_name, deliveries=deliveries[1:])
    (again,) = pull(conn, queue_name)
    hook.pashq_dead_letter(queue=queue_name, delivery=again, reason="no", traceback=None)
    conn.stats(queue_name)
    conn.failed(queue_name)
    assert conn.retry_failed(queue_name) == 1
    drain(conn, queue_name, 2)
    _dead_letter(conn, queue_name, "again")
    assert conn.purge_failed(queue_name) == 1
    conn.purge(queue_name)
    actions = {action for action, _ in calls}
    assert not actions & {"ListQueues", "GetQueueUrl", "CreateQueue"}, actions
    assert {
        "SendMessageBatch",
        "ReceiveMessage",
        "DeleteMessageBatch",
        "ChangeMessageVisibilityBatch",
        "SendMessage",
        "GetQueueAttributes",
        "PurgeQueue",
    } <= actions


def test_queue_missing_from_queue_urls_is_named(open_sqs: OpenSQS, queue_name: str) -> None:
    conn = open_sqs(queue_urls={"other": "http://127.0.0.1:1/000000000000/other"})
    with pytest.raises(QueueNotFoundError, match=rf"{queue_name!r} is not in 'queue_urls'"):
        push(conn, queue_name, outgoing())


# -- heartbeat after settlement ----------------------------------------------------------------


def test_extending_a_deleted_message_is_harmless(
    open_sqs: OpenSQS, queue_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A heartbeat that lands after the ack (DeleteMessageBatch) finds the handle gone:
    the message is settled, so that is not an error; the others are still extended."""
    conn = open_sqs(visibility_timeout=30)
    push(conn, queue_name, outgoing(), outgoing())
    deliveries = drain(conn, queue_name, 2, ack=False)
    settled, running = deliveries
    conn.hook.pashq_ack(queue=queue_name, deliveries=[settled])
    calls = record_calls(conn)
    with caplog.at_level(logging.DEBUG, logger="pashq_sqs"):
        conn.hook.pashq_extend(queue=queue_name, deliveries=[settled, running], seconds=60)
    (params,) = [p for action, p in calls if action == "ChangeMessageVisibilityBatch"]
    assert len(params["Entries"]) == 2
    assert any(r.levelno == logging.DEBUG and settled.id in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    conn.hook.pashq_ack(queue=queue_name, deliveries=[running])


def test_releasing_a_deleted_message_is_still_an_error(open_sqs: OpenSQS, queue_name: str) -> None:
    conn = open_sqs()
    push(conn, queue_name, outgoing())
    (delivery,) = drain(conn, queue_name, 1)
    with pytest.raises(DriverError, match=delivery.id):
        conn.hook.pashq_nack(queue=queue_name, deliveries=[delivery], delay=0)


def test_no_dead_letter_queue_error_with_create_queues_does_not_advise_it(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    sqs_client.create_queue(QueueName=queue_name)  # exists before: create_queues keeps it
    conn = open_sqs(create_queues=True)
    push(conn, queue_name, outgoing())
    (delivery,) = pull(conn, queue_name)
    with pytest.raises(DriverError) as caught:
        conn.hook.pashq_dead_letter(queue=queue_name, delivery=delivery, reason="x", traceback=None)
    assert "set create_queues = true" not in str(caught.value)
    assert "never change an existing queue" in str(caught.value)


def test_queue_deleted_while_create_queues_is_on_gets_advice_that_fits(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    """With create_queues on, a missing queue was deleted after it was resolved: the error
    says to recreate it instead of advising the setting already in place."""
    conn = open_sqs(create_queues=True)
    push(conn, queue_name, outgoing())
    sqs_client.delete_queue(QueueUrl=sqs_client.get_queue_url(QueueName=queue_name)["QueueUrl"])
    with pytest.raises(QueueNotFoundError) as caught:
        push(conn, queue_name, outgoing())
    text = str(caught.value)
    assert queue_name in text and "deleted after this connection resolved it" in text
    assert "set create_queues = true" not in text


def test_fifo_deferred_copy_is_not_dropped_as_a_duplicate(
    open_sqs: OpenSQS, queue_name: str
) -> None:
    """A message over its rate limit on a FIFO queue is re-pushed (SQS cannot undo its
    receive count) and then acked: the copy must not be deduplicated away, or the ack
    would lose the message."""
    from pashq.worker.deferral import defer

    conn = open_sqs(fifo=True)
    message = outgoing({"n": 7}, group_id="g")
    push(conn, queue_name, message)
    (delivery,) = pull(conn, queue_name, 1)
    defer(conn.hook, queue_name, [delivery], 0.0)
    (copy,) = pull(conn, queue_name, 1)
    assert copy.id == message.id and copy.body == message.body
    assert copy.attempts == 1  # the copy starts afresh

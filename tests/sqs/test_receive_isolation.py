"""A failure stays with its own message: one bad message never strands a whole receive.

Messages here are sent with plain boto3 (as a third-party producer, or an attacker, would),
then pulled through the driver. Every test checks that the ordinary messages received in
the same ReceiveMessage are still handed out, and what became of the odd one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqs_worker_messages  # noqa: F401 - registers tests.sqs.numbered for the worker

from pashq import Connection, Delivery, OutgoingMessage, Worker
from pashq.envelope import Envelope, encode_envelope, new_message_id, utc_timestamp
from pashq.testing import wait_for

pytestmark = pytest.mark.sqs

OpenSQS = Callable[..., Connection]
# Seconds allowed for the ordinary messages to be handed out (a loaded 2-core machine).
_DEADLINE = 30.0


def outgoing(body: Any = None) -> OutgoingMessage:
    envelope = Envelope(new_message_id(), "tests.sqs.raw", body or {"n": 0}, utc_timestamp(), {})
    return OutgoingMessage(envelope.id, envelope.type, encode_envelope(envelope))


def _url(conn: Connection, queue: str, sqs_client: Any) -> str:
    conn.hook.pashq_declare(queue=queue)
    return str(sqs_client.get_queue_url(QueueName=queue)["QueueUrl"])


def _send_raw(sqs_client: Any, url: str, body: str, **attributes: str) -> None:
    """Send one message with String attributes, as any boto3 producer could."""
    sqs_client.send_message(
        QueueUrl=url,
        MessageBody=body,
        MessageAttributes={
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        },
    )


def _send_ordinary(sqs_client: Any, url: str, count: int) -> list[str]:
    ids = []
    for n in range(count):
        message = outgoing({"n": n})
        _send_raw(sqs_client, url, message.body.decode(), **{"pashq-id": message.id})
        ids.append(message.id)
    return ids


def _collect(conn: Connection, queue: str, expected: int) -> list[Delivery]:
    """Pull (never failing) until ``expected`` deliveries came, then ack them."""
    got: list[Delivery] = []
    deadline = time.monotonic() + _DEADLINE
    while len(got) < expected and time.monotonic() < deadline:
        got += conn.hook.pashq_pull(queue=queue, max_messages=10, timeout=1.0)
    if got:
        conn.hook.pashq_ack(queue=queue, deliveries=got)
    return got


def _counts(sqs_client: Any, url: str) -> dict[str, int]:
    found = sqs_client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return {
        "ready": int(found["ApproximateNumberOfMessages"]),
        "in_flight": int(found["ApproximateNumberOfMessagesNotVisible"]),
        "delayed": int(found["ApproximateNumberOfMessagesDelayed"]),
    }


def _later() -> str:
    return repr(time.time() + 3600)


# -- item: re-delaying messages that are not due yet ---------------------------------------


def test_redelay_of_large_messages_is_split_by_total_batch_size(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    """Two ~600 KB messages not due yet cannot share one SendMessageBatch (1 MiB): both are
    re-delayed and the ordinary messages of the receive are delivered."""
    conn = open_sqs()
    url = _url(conn, queue_name, sqs_client)
    for n in range(2):
        big = outgoing({"n": n, "text": "x" * 600_000})
        _send_raw(
            sqs_client,
            url,
            big.body.decode(),
            **{"pashq-id": big.id, "pashq-deliver-at": _later()},
        )
    ids = _send_ordinary(sqs_client, url, 3)
    got = _collect(conn, queue_name, 3)
    assert sorted(d.id for d in got) == sorted(ids)
    wait_for(lambda: _counts(sqs_client, url)["delayed"] == 2, timeout=20, what="2 re-delayed")
    assert conn.stats(queue_name).failed == 0


def test_failed_redelay_send_delivers_the_others_and_keeps_the_message(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    """A re-delay whose SendMessageBatch fails (here: sent to a queue that does not exist)
    does not fail the pull; the message is not deleted and comes back after its visibility
    timeout."""
    conn = open_sqs()
    url = _url(conn, queue_name, sqs_client)
    early = outgoing({"early": True})
    _send_raw(
        sqs_client, url, early.body.decode(), **{"pashq-id": early.id, "pashq-deliver-at": _later()}
    )
    ids = _send_ordinary(sqs_client, url, 2)

    def break_send(params: dict[str, Any], **kwargs: Any) -> None:
        params["QueueUrl"] = params["QueueUrl"] + "-missing"

    events = conn.driver.client.meta.events
    events.register("before-parameter-build.sqs.SendMessageBatch", break_send)
    try:
        got = _collect(conn, queue_name, 2)
    finally:
        events.unregister("before-parameter-build.sqs.SendMessageBatch", break_send)
    assert sorted(d.id for d in got) == sorted(ids)
    # Not deleted: hidden until its visibility timeout, then re-delayed on its next receive.
    assert _counts(sqs_client, url)["in_flight"] == 1

    def redelayed() -> bool:
        assert conn.hook.pashq_pull(queue=queue_name, max_messages=10, timeout=1.0) == []
        return _counts(sqs_client, url) == {"ready": 0, "in_flight": 0, "delayed": 1}

    wait_for(redelayed, timeout=20, what="the message re-delayed after its visibility timeout")


def test_redelay_entry_refused_by_sqs_is_not_deleted(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    """SQS refuses one entry of the re-send (here: a DelaySeconds over 900): that message
    stays hidden until its visibility timeout, the other one is re-delayed."""
    conn = open_sqs()
    url = _url(conn, queue_name, sqs_client)
    for n in range(2):
        early = outgoing({"early": n})
        _send_raw(
            sqs_client,
            url,
            early.body.decode(),
            **{"pashq-id": early.id, "pashq-deliver-at": _later()},
        )
    ids = _send_ordinary(sqs_client, url, 1)

    def refuse_first(params: dict[str, Any], **kwargs: Any) -> None:
        params["Entries"][0]["DelaySeconds"] = 901

    events = conn.driver.client.meta.events
    events.register("before-parameter-build.sqs.SendMessageBatch", refuse_first)
    try:
        got = _collect(conn, queue_name, 1)
    finally:
        events.unregister("before-parameter-build.sqs.SendMessageBatch", refuse_first)
    assert [d.id for d in got] == ids
    wait_for(
        lambda: _counts(sqs_client, url) == {"ready": 0, "in_flight": 1, "delayed": 1},
        timeout=10,
        what="one re-delayed, one left in flight",
    )


def test_failed_delete_after_redelay_does_not_fail_the_pull(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    """The copy was sent but the received message could not be deleted: the others are
    still delivered (the message may then exist twice, never zero times)."""
    conn = open_sqs()
    url = _url(conn, queue_name, sqs_client)
    early = outgoing({"early": True})
    _send_raw(
        sqs_client, url, early.body.decode(), **{"pashq-id": early.id, "pashq-deliver-at": _later()}
    )
    ids = _send_ordinary(sqs_client, url, 2)

    def break_delete(params: dict[str, Any], **kwargs: Any) -> None:
        for entry in params["Entries"]:
            entry["ReceiptHandle"] = "not-a-receipt-handle"

    events = conn.driver.client.meta.events
    events.register("before-parameter-build.sqs.DeleteMessageBatch", break_delete)
    try:
        got: list[Delivery] = []
        deadline = time.monotonic() + _DEADLINE
        while len(got) < 2 and time.monotonic() < deadline:
            got += conn.hook.pashq_pull(queue=queue_name, max_messages=10, timeout=1.0)
    finally:
        events.unregister("before-parameter-build.sqs.DeleteMessageBatch", break_delete)
    conn.hook.pashq_ack(queue=queue_name, deliveries=got)
    assert sorted(d.id for d in got) == sorted(ids)
    assert _counts(sqs_client, url)["delayed"] == 1  # the copy is there


# -- item: attributes the driver cannot parse -----------------------------------------------


@pytest.mark.parametrize("value", ["inf", "nan", "abc", "-1e999", "1e300", ""])
def test_unparsable_deliver_at_dead_letters_only_its_own_message(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any, value: str
) -> None:
    conn = open_sqs()
    url = _url(conn, queue_name, sqs_client)
    bad = outgoing({"bad": value})
    _send_raw(sqs_client, url, bad.body.decode(), **{"pashq-id": bad.id, "pashq-deliver-at": value})
    ids = _send_ordinary(sqs_client, url, 3)
    got = _collect(conn, queue_name, 3)
    assert sorted(d.id for d in got) == sorted(ids)
    (dead,) = wait_for(lambda: conn.failed(queue_name), timeout=20, what="the bad message")
    assert dead.id == bad.id
    assert "pashq-deliver-at" in dead.reason and "Unix time" in dead.reason
    assert dead.body == bad.body


@pytest.mark.parametrize(
    "value",
    ["x" * 65, "bad\x01id", "", "   ", "a/b"],
    ids=["too-long", "control", "empty", "blank", "slash"],
)
def test_unusable_pashq_id_is_replaced_by_the_envelope_id(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any, value: str
) -> None:
    conn = open_sqs()
    url = _url(conn, queue_name, sqs_client)
    message = outgoing()
    _send_raw(sqs_client, url, message.body.decode(), **{"pashq-id": value})
    (delivery,) = _collect(conn, queue_name, 1)
    assert delivery.id == message.id


def test_dead_letter_with_unparsable_attributes_is_still_listed(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    """A dead letter put in the DLQ by someone else, with garbage pashq-* attributes, is
    listed (and can be retried) instead of failing the whole listing."""
    conn = open_sqs()
    conn.hook.pashq_declare(queue=queue_name)
    dlq = str(sqs_client.get_queue_url(QueueName=f"{queue_name}-failed")["QueueUrl"])
    odd, plain = outgoing({"odd": True}), outgoing({"plain": True})
    _send_raw(
        sqs_client,
        dlq,
        odd.body.decode(),
        **{"pashq-attempts": "inf", "pashq-failed-at": "yesterday", "pashq-reason": "odd"},
    )
    _send_raw(sqs_client, dlq, plain.body.decode(), **{"pashq-attempts": "nan"})
    letters = wait_for(lambda: conn.failed(queue_name), timeout=20, what="the dead letters")
    assert sorted(d.id for d in letters) == sorted([odd.id, plain.id])
    assert all(d.attempts == 0 for d in letters)
    assert all(d.failed_at is not None and d.failed_at.utcoffset() is not None for d in letters)
    assert conn.retry_failed(queue_name, [odd.id]) == 1


def test_worker_processes_every_good_message_received_with_a_poisoned_one(
    open_sqs: OpenSQS,
    queue_name: str,
    sqs_client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The attack: 30 good messages and one with ``pashq-deliver-at = inf``, all sent by
    plain boto3. The worker processes the 30; the poisoned one ends in the dead letters."""
    record = tmp_path / "numbers.txt"
    monkeypatch.setenv("PASHQ_SQS_TEST_RECORD", str(record))
    conn = open_sqs(max_attempts=3)
    url = _url(conn, queue_name, sqs_client)
    poisoned = Envelope(new_message_id(), "tests.sqs.numbered", {"n": -1}, utc_timestamp(), {})
    _send_raw(sqs_client, url, encode_envelope(poisoned).decode(), **{"pashq-deliver-at": "inf"})
    for n in range(30):
        envelope = Envelope(new_message_id(), "tests.sqs.numbered", {"n": n}, utc_timestamp(), {})
        _send_raw(sqs_client, url, encode_envelope(envelope).decode())
    worker = Worker(queue_name, connection=conn, install_signal_handlers=False)
    stats = worker.run(until_empty=True)
    assert sorted(int(n) for n in record.read_text().split()) == list(range(30))
    assert stats.acked == 30 and stats.errors == 0
    (dead,) = conn.failed(queue_name)
    assert dead.id == poisoned.id and "pashq-deliver-at" in dead.reason


# -- item: ids of messages sent without pashq-id ---------------------------------------------


def test_message_sent_without_pashq_id_is_delivered_with_its_envelope_id(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    conn = open_sqs()
    url = _url(conn, queue_name, sqs_client)
    message = outgoing()
    _send_raw(sqs_client, url, message.body.decode())
    (delivery,) = _collect(conn, queue_name, 1)
    assert delivery.id == message.id
    assert delivery.id != delivery.receipt.message_id


def test_dead_letter_sent_without_pashq_id_is_listed_retried_and_purged_by_envelope_id(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    conn = open_sqs()
    url = _url(conn, queue_name, sqs_client)
    kept, retried = outgoing({"kept": True}), outgoing({"retried": True})
    for message in (kept, retried):
        _send_raw(sqs_client, url, message.body.decode())
    deliveries = _collect_unacked(conn, queue_name, 2)
    for delivery in deliveries:
        conn.hook.pashq_dead_letter(
            queue=queue_name, delivery=delivery, reason="no", traceback=None
        )
    listed = wait_for(lambda: conn.failed(queue_name), timeout=20, what="the dead letters")
    assert sorted(d.id for d in listed) == sorted([kept.id, retried.id])
    assert conn.retry_failed(queue_name, [retried.id]) == 1
    (back,) = _collect(conn, queue_name, 1)
    assert back.id == retried.id
    assert conn.purge_failed(queue_name, [kept.id]) == 1
    assert conn.failed(queue_name) == []


def test_dead_letter_whose_pashq_id_differs_is_known_by_its_envelope_id(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    """Moved to the DLQ by SQS's redrive with a foreign pashq-id: the envelope's id wins."""
    conn = open_sqs()
    conn.hook.pashq_declare(queue=queue_name)
    dlq = str(sqs_client.get_queue_url(QueueName=f"{queue_name}-failed")["QueueUrl"])
    message = outgoing()
    _send_raw(sqs_client, dlq, message.body.decode(), **{"pashq-id": "someone-elses-id"})
    (letter,) = wait_for(lambda: conn.failed(queue_name), timeout=20, what="the dead letter")
    assert letter.id == message.id
    assert conn.retry_failed(queue_name, [message.id]) == 1


def test_undecodable_dead_letter_is_known_by_its_pashq_id(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    conn = open_sqs()
    conn.hook.pashq_declare(queue=queue_name)
    dlq = str(sqs_client.get_queue_url(QueueName=f"{queue_name}-failed")["QueueUrl"])
    _send_raw(sqs_client, dlq, "not an envelope", **{"pashq-id": "transport-id-1"})
    (letter,) = wait_for(lambda: conn.failed(queue_name), timeout=20, what="the dead letter")
    assert letter.id == "transport-id-1"
    assert conn.purge_failed(queue_name, ["transport-id-1"]) == 1


def test_dead_letter_without_any_readable_id_is_listed_with_an_empty_id(
    open_sqs: OpenSQS, queue_name: str, sqs_client: Any
) -> None:
    """Neither pashq-id nor an envelope: the id is unknown (""), not SQS's MessageId."""
    conn = open_sqs()
    conn.hook.pashq_declare(queue=queue_name)
    dlq = str(sqs_client.get_queue_url(QueueName=f"{queue_name}-failed")["QueueUrl"])
    _send_raw(sqs_client, dlq, "not an envelope")
    (letter,) = wait_for(lambda: conn.failed(queue_name), timeout=20, what="the dead letter")
    assert letter.id == ""
    assert letter.body == b"not an envelope"


def _collect_unacked(conn: Connection, queue: str, expected: int) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + _DEADLINE
    while len(got) < expected and time.monotonic() < deadline:
        got += conn.hook.pashq_pull(queue=queue, max_messages=10, timeout=1.0)
    return got

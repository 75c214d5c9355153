"""The driver contract: composable test classes, one per capability.

Each test takes the ``queue_under_test`` fixture (a fresh, empty queue) and skips when the
driver does not declare the capability it needs. :class:`DriverContract` combines them all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pashq.delivery import DeadLetter, Delivery, MovedMessage, OutgoingMessage
from pashq.envelope import (
    Envelope,
    decode_envelope,
    encode_envelope,
    new_message_id,
    utc_timestamp,
)
from pashq.errors import UnsupportedError
from pashq.testing.messages import AlwaysFails, AppendToFile, Recorded, Rejected, processed
from pashq.testing.support import QueueUnderTest, drain, wait_for, wait_until_blocked
from pashq.worker import Worker

__all__ = [
    "BasicContract",
    "BatchContract",
    "BodyContract",
    "CrashRecoveryContract",
    "DeadLetterContract",
    "DelayContract",
    "DriverContract",
    "ForkContract",
    "HeadersContract",
    "IsolationContract",
    "LeaseContract",
    "MoveContract",
    "NackContract",
    "PriorityContract",
    "PurgeContract",
    "QueueListingContract",
    "StatsContract",
    "WorkerContract",
    "contract_override",
]

F = TypeVar("F", bound=Callable[..., Any])
_OVERRIDE = "__pashq_contract_override__"


def contract_override(reason: str) -> Callable[[F], F]:
    """Mark a subclass's replacement of a contract test as deliberate (with the reason)."""

    def mark(func: F) -> F:
        setattr(func, _OVERRIDE, reason)
        return func

    return mark


def _require(qut: QueueUnderTest, *capabilities: str) -> None:
    caps = qut.connection.capabilities
    missing = [c for c in capabilities if not getattr(caps, c)]
    if missing:
        pytest.skip(f"driver lacks capability: {', '.join(missing)}")


def _outgoing(
    body: Any = None,
    delay: float = 0.0,
    type_name: str = "pashq.testing.raw",
    headers: dict[str, str] | None = None,
) -> OutgoingMessage:
    envelope = Envelope(
        new_message_id(),
        type_name,
        body if body is not None else {"n": 0},
        utc_timestamp(),
        headers or {},
    )
    return OutgoingMessage(envelope.id, type_name, encode_envelope(envelope), delay)


def _push(qut: QueueUnderTest, *messages: OutgoingMessage) -> list[str]:
    ids: list[str] = qut.connection.hook.pashq_push(
        queue=qut.name, messages=list(messages), options={}
    )
    return ids


def _pull(qut: QueueUnderTest, n: int = 10, timeout: float = 5.0) -> list[Delivery]:
    """Pull until something arrives or ``timeout`` passes (drivers may return early)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        got: list[Delivery] = qut.connection.hook.pashq_pull(
            queue=qut.name, max_messages=n, timeout=min(remaining, 2.0)
        )
        if got or remaining <= 0:
            return got


def _ack(qut: QueueUnderTest, deliveries: list[Delivery]) -> None:
    qut.connection.hook.pashq_ack(queue=qut.name, deliveries=deliveries)


def _worker(qut: QueueUnderTest, **kwargs: Any) -> Worker:
    kwargs.setdefault("poll_timeout", 1.0)
    return Worker(qut.name, connection=qut.connection, install_signal_handlers=False, **kwargs)


class _Contract:
    """Base of every contract class: the guard against deleted or overridden tests."""

    def test_contract_is_complete(self) -> None:
        """Every contract test is present and not silently replaced in the subclass."""
        problems = []
        for base in type(self).__mro__:
            if base.__module__ != __name__:
                continue
            for name, func in vars(base).items():
                if not name.startswith("test_"):
                    continue
                current = getattr(type(self), name, None)
                if current is None:
                    problems.append(f"{name} was deleted")
                elif current is not func and not hasattr(current, _OVERRIDE):
                    problems.append(f"{name} is overridden without @contract_override(reason)")
        assert not problems, f"{type(self).__name__}: " + "; ".join(problems)


class BasicContract(_Contract):
    """Push, pull, ack: the data path every consuming driver has."""

    def test_push_returns_ids_in_order(self, queue_under_test: QueueUnderTest) -> None:
        """pashq_push returns the ids of the pushed messages, in order."""
        _require(queue_under_test, "consume")
        messages = [_outgoing({"n": i}) for i in range(3)]
        assert _push(queue_under_test, *messages) == [m.id for m in messages]
        drain(queue_under_test.connection, queue_under_test.name, 3)

    def test_pulled_delivery_carries_body_id_and_first_attempt(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """A pulled delivery has the pushed bytes, the message id and attempts == 1."""
        _require(queue_under_test, "consume")
        message = _outgoing({"hello": "world"})
        _push(queue_under_test, message)
        (delivery,) = _pull(queue_under_test, 10)
        assert delivery.body == message.body
        assert delivery.id == message.id
        assert delivery.attempts == 1
        assert delivery.queue == queue_under_test.name
        _ack(queue_under_test, [delivery])

    def test_acked_message_is_not_delivered_again(self, queue_under_test: QueueUnderTest) -> None:
        """After an ack the queue is empty (lease or not)."""
        _require(queue_under_test, "consume")
        _push(queue_under_test, _outgoing())
        deliveries = _pull(queue_under_test)
        _ack(queue_under_test, deliveries)
        wait = (queue_under_test.lease or 0.5) + 0.5
        assert _pull(queue_under_test, timeout=wait) == []

    def test_pull_on_empty_queue_returns_empty_within_timeout(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """An empty queue yields [] and the pull honours its timeout (with slack)."""
        _require(queue_under_test, "consume")
        start = time.monotonic()
        got = queue_under_test.connection.hook.pashq_pull(
            queue=queue_under_test.name, max_messages=10, timeout=1.0
        )
        assert got == []
        assert time.monotonic() - start < 10.0

    def test_waiting_pull_returns_promptly_after_close(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """A pull waiting on an empty queue returns (or raises) soon after ``pashq_close``."""
        _require(queue_under_test, "consume")
        if queue_under_test.open_connection is None:
            pytest.skip("fixture gives no open_connection")
        other = queue_under_test.open_connection()
        other.check_queue_name(queue_under_test.name)
        other.hook.pashq_declare(queue=queue_under_test.name)
        entered = threading.Event()
        returned = threading.Event()

        def pull() -> None:
            entered.set()
            with contextlib.suppress(Exception):  # raising is a way of returning promptly
                other.hook.pashq_pull(queue=queue_under_test.name, max_messages=1, timeout=20.0)
            returned.set()

        thread = threading.Thread(target=pull, daemon=True)
        thread.start()
        entered.wait(5)
        # What is measured is the close below: let the pull reach its wait first.
        wait_until_blocked(thread)
        started = time.monotonic()
        other.close()
        assert returned.wait(10), "pull still waiting 10 s after pashq_close"
        assert time.monotonic() - started < 10

    def test_pull_respects_max_messages(self, queue_under_test: QueueUnderTest) -> None:
        """A pull never returns more than max_messages."""
        _require(queue_under_test, "consume")
        _push(queue_under_test, *[_outgoing({"n": i}) for i in range(5)])
        first = _pull(queue_under_test, 2)
        assert 1 <= len(first) <= 2
        _ack(queue_under_test, first)
        rest = drain(queue_under_test.connection, queue_under_test.name, 5 - len(first))
        assert len(rest) == 5 - len(first)


class BatchContract(_Contract):
    """Batches larger than the driver's batch size go through whole, each message once."""

    def test_large_batch_is_pushed_and_drained_exactly(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """2.5x the batch size (at most 250) all arrive, none twice."""
        _require(queue_under_test, "consume")
        count = min(250, int(queue_under_test.connection.capabilities.batch_size * 2.5))
        messages = [_outgoing({"n": i}) for i in range(count)]
        ids = _push(queue_under_test, *messages)
        assert len(ids) == count
        got = drain(queue_under_test.connection, queue_under_test.name, count, timeout=60)
        assert sorted(d.id for d in got) == sorted(m.id for m in messages)


class IsolationContract(_Contract):
    """Queues on one connection do not see each other's messages."""

    def test_queues_are_isolated(self, queue_under_test: QueueUnderTest) -> None:
        """A message pushed to one queue is not pulled from another."""
        _require(queue_under_test, "consume")
        other = f"{queue_under_test.name}-other"
        hook = queue_under_test.connection.hook
        hook.pashq_declare(queue=other)
        message = _outgoing()
        hook.pashq_push(queue=other, messages=[message], options={})
        assert _pull(queue_under_test, timeout=1.0) == []
        got = drain(queue_under_test.connection, other, 1)
        assert [d.id for d in got] == [message.id]


class BodyContract(_Contract):
    """Bodies are opaque bytes: unicode and large bodies round-trip unchanged."""

    def test_unicode_body_round_trips(self, queue_under_test: QueueUnderTest) -> None:
        """Non-ASCII text survives byte for byte."""
        _require(queue_under_test, "consume")
        message = _outgoing({"text": 'héllo wörld ✓ 日本語 🚀 \u0000 "quoted" \\ back'})
        _push(queue_under_test, message)
        (delivery,) = drain(queue_under_test.connection, queue_under_test.name, 1)
        assert delivery.body == message.body

    def test_large_body_round_trips(self, queue_under_test: QueueUnderTest) -> None:
        """A ~130 KB envelope survives byte for byte."""
        _require(queue_under_test, "consume")
        message = _outgoing({"text": "ü€𝄞" * 15_000})
        _push(queue_under_test, message)
        (delivery,) = drain(queue_under_test.connection, queue_under_test.name, 1)
        assert delivery.body == message.body


class NackContract(_Contract):
    """Released messages come back, counting the attempt; with a delay, not before it."""

    def test_nacked_message_is_redelivered_with_next_attempt(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """nack(delay=0) makes the message deliverable again with attempts == 2."""
        _require(queue_under_test, "consume")
        message = _outgoing()
        _push(queue_under_test, message)
        (first,) = _pull(queue_under_test)
        queue_under_test.connection.hook.pashq_nack(
            queue=queue_under_test.name, deliveries=[first], delay=0.0
        )
        (second,) = _pull(queue_under_test, timeout=10)
        assert second.id == message.id
        assert second.body == message.body
        assert second.attempts == 2
        _ack(queue_under_test, [second])

    def test_nack_with_delay_hides_message_until_due(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """nack(delay=2) keeps it away for about two seconds, then it returns."""
        _require(queue_under_test, "consume", "nack_delay")
        _push(queue_under_test, _outgoing())
        (first,) = _pull(queue_under_test)
        released = time.monotonic()
        queue_under_test.connection.hook.pashq_nack(
            queue=queue_under_test.name, deliveries=[first], delay=2.0
        )
        assert _pull(queue_under_test, timeout=0.5) == []
        (second,) = _pull(queue_under_test, timeout=15)
        assert time.monotonic() - released >= 1.5
        assert second.attempts == 2
        _ack(queue_under_test, [second])


class DelayContract(_Contract):
    """Delayed dispatch is held by the backend until due."""

    def test_delayed_message_is_not_delivered_early(self, queue_under_test: QueueUnderTest) -> None:
        """A 2-second delay is honoured, then the message arrives."""
        _require(queue_under_test, "consume", "delay")
        pushed = time.monotonic()
        _push(queue_under_test, _outgoing(delay=2.0))
        assert _pull(queue_under_test, timeout=0.5) == []
        (delivery,) = _pull(queue_under_test, timeout=15)
        assert time.monotonic() - pushed >= 1.5
        _ack(queue_under_test, [delivery])


class LeaseContract(_Contract):
    """An unacked delivery comes back after its lease; an extended one does not."""

    def test_unacked_message_returns_after_lease(self, queue_under_test: QueueUnderTest) -> None:
        """Never settled, the message is delivered again, counting the attempt."""
        _require(queue_under_test, "consume", "lease")
        assert queue_under_test.lease, "fixture must report the lease it configured"
        message = _outgoing()
        _push(queue_under_test, message)
        (first,) = _pull(queue_under_test)
        assert first.lease
        (again,) = _pull(queue_under_test, timeout=queue_under_test.lease + 15)
        assert again.id == message.id
        assert again.attempts == 2
        _ack(queue_under_test, [again])

    def test_stale_ack_does_not_remove_the_redelivered_message(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """An ack for a delivery whose lease ran out leaves the message now held by another
        consumer: it comes back after that consumer's lease too."""
        _require(queue_under_test, "consume", "lease")
        assert queue_under_test.lease, "fixture must report the lease it configured"
        message = _outgoing()
        _push(queue_under_test, message)
        (stale,) = _pull(queue_under_test)
        (held,) = _pull(queue_under_test, timeout=queue_under_test.lease + 15)
        assert held.attempts == 2
        _ack(queue_under_test, [stale])  # too late: the message is held by `held` now
        (again,) = _pull(queue_under_test, timeout=queue_under_test.lease + 15)
        assert again.id == message.id and again.attempts == 3
        _ack(queue_under_test, [again])

    def test_extended_lease_keeps_message_reserved(self, queue_under_test: QueueUnderTest) -> None:
        """Extending the lease before it ends keeps the message from other pullers."""
        _require(queue_under_test, "consume", "lease", "extend_lease")
        lease = queue_under_test.lease
        assert lease
        _push(queue_under_test, _outgoing())
        (first,) = _pull(queue_under_test)
        hook = queue_under_test.connection.hook
        end = time.monotonic() + lease * 2
        while time.monotonic() < end:
            hook.pashq_extend(queue=queue_under_test.name, deliveries=[first], seconds=lease * 3)
            assert (
                hook.pashq_pull(queue=queue_under_test.name, max_messages=1, timeout=lease / 3)
                == []
            )
        _ack(queue_under_test, [first])
        assert _pull(queue_under_test, timeout=lease + 1) == []


class CrashRecoveryContract(_Contract):
    """A consumer that dies without acking does not lose the message."""

    def test_message_survives_consumer_crash(self, queue_under_test: QueueUnderTest) -> None:
        """Pulled on a second connection that is then closed unacked: it comes back."""
        _require(queue_under_test, "consume", "persistent")
        if queue_under_test.open_connection is None:
            pytest.fail("fixture must provide open_connection for persistent drivers")
        message = _outgoing()
        _push(queue_under_test, message)
        crashed = queue_under_test.open_connection()
        try:
            got = crashed.hook.pashq_pull(queue=queue_under_test.name, max_messages=1, timeout=5.0)
            assert [d.id for d in got] == [message.id]
        finally:
            crashed.close()
        (again,) = _pull(queue_under_test, timeout=(queue_under_test.lease or 0) + 15)
        assert again.id == message.id
        _ack(queue_under_test, [again])


class DeadLetterContract(_Contract):
    """Dead letters are kept with their reason, listed, retried and purged."""

    def _dead_letter(self, qut: QueueUnderTest, reason: str = "broken") -> OutgoingMessage:
        message = _outgoing()
        _push(qut, message)
        (delivery,) = _pull(qut)
        qut.connection.hook.pashq_dead_letter(
            queue=qut.name, delivery=delivery, reason=reason, traceback="Traceback: here"
        )
        return message

    def test_dead_letter_is_listed_with_reason(self, queue_under_test: QueueUnderTest) -> None:
        """A dead-lettered message leaves the queue and is listed with its reason."""
        _require(queue_under_test, "consume", "dead_letters")
        message = self._dead_letter(queue_under_test, "bad input: 42")
        dead = wait_for(
            lambda: queue_under_test.connection.failed(queue_under_test.name),
            timeout=10,
            what="the dead letter to be listed",
        )
        assert [d.id for d in dead] == [message.id]
        assert dead[0].reason == "bad input: 42"
        assert dead[0].body == message.body
        assert _pull(queue_under_test, timeout=(queue_under_test.lease or 0.5) + 0.5) == []

    def test_failed_retry_moves_message_back(self, queue_under_test: QueueUnderTest) -> None:
        """Retrying a dead letter makes it deliverable again, body intact."""
        _require(queue_under_test, "consume", "dead_letters")
        message = self._dead_letter(queue_under_test)
        wait_for(lambda: queue_under_test.connection.failed(queue_under_test.name), timeout=10)
        assert queue_under_test.connection.retry_failed(queue_under_test.name) == 1
        (again,) = drain(queue_under_test.connection, queue_under_test.name, 1)
        assert again.body == message.body
        assert queue_under_test.connection.failed(queue_under_test.name) == []

    def test_failed_purge_deletes_dead_letters(self, queue_under_test: QueueUnderTest) -> None:
        """Purging dead letters removes them for good."""
        _require(queue_under_test, "consume", "dead_letters")
        self._dead_letter(queue_under_test)
        wait_for(lambda: queue_under_test.connection.failed(queue_under_test.name), timeout=10)
        assert queue_under_test.connection.purge_failed(queue_under_test.name) == 1
        assert queue_under_test.connection.failed(queue_under_test.name) == []

    def test_dead_letter_keeps_attempts_and_a_timezone_aware_failed_at(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """A listed dead letter has the attempts made (>= 1) and ``failed_at`` in UTC
        (timezone-aware) when the backend knows it."""
        _require(queue_under_test, "consume", "dead_letters")
        before = time.time()
        self._dead_letter(queue_under_test)
        (dead,) = wait_for(lambda: queue_under_test.connection.failed(queue_under_test.name))
        assert dead.attempts >= 1
        if dead.failed_at is not None:
            assert dead.failed_at.tzinfo is not None
            assert dead.failed_at.utcoffset() == timedelta(0)
            assert abs(dead.failed_at.timestamp() - before) < 60

    def test_dead_letters_are_listed_oldest_first_up_to_limit(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """``failed(queue, limit)`` lists the oldest dead letters first, at most ``limit``."""
        _require(queue_under_test, "consume", "dead_letters")
        first = self._dead_letter(queue_under_test, "first")
        second = self._dead_letter(queue_under_test, "second")
        self._dead_letter(queue_under_test, "third")
        wait_for(lambda: len(queue_under_test.connection.failed(queue_under_test.name)) == 3)
        listed = queue_under_test.connection.failed(queue_under_test.name, limit=2)
        assert [d.id for d in listed] == [first.id, second.id]

    def test_dead_letters_are_retried_and_purged_by_id(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """Retry and purge with ``ids`` touch only those dead letters and count them."""
        _require(queue_under_test, "consume", "dead_letters")
        conn, name = queue_under_test.connection, queue_under_test.name
        kept = self._dead_letter(queue_under_test, "kept")
        retried = self._dead_letter(queue_under_test, "retried")
        purged = self._dead_letter(queue_under_test, "purged")
        wait_for(lambda: len(conn.failed(name)) == 3)
        assert conn.retry_failed(name, [retried.id]) == 1
        assert conn.purge_failed(name, [purged.id]) == 1
        assert [d.id for d in conn.failed(name)] == [kept.id]
        (again,) = drain(conn, name, 1)
        assert again.id in (retried.id, "") and again.body == retried.body

    def test_attempts_begin_at_one_again_after_a_dead_letter_is_retried(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """A retried dead letter is a fresh message: its next delivery is attempt 1."""
        _require(queue_under_test, "consume", "dead_letters", "nack_delay")
        conn, name = queue_under_test.connection, queue_under_test.name
        message = _outgoing()
        _push(queue_under_test, message)
        (delivery,) = _pull(queue_under_test)
        conn.hook.pashq_nack(queue=name, deliveries=[delivery], delay=0.0)
        (delivery,) = _pull(queue_under_test)
        assert delivery.attempts == 2
        conn.hook.pashq_dead_letter(queue=name, delivery=delivery, reason="x", traceback=None)
        wait_for(lambda: conn.failed(name))
        assert conn.retry_failed(name) == 1
        (again,) = drain(conn, name, 1)
        assert again.attempts == 1


class StatsContract(_Contract):
    """Stats count what is waiting."""

    def test_stats_count_ready_messages(self, queue_under_test: QueueUnderTest) -> None:
        """Three pushed messages show as three ready (eventually, for approximate backends)."""
        _require(queue_under_test, "consume", "stats")
        _push(queue_under_test, *[_outgoing({"n": i}) for i in range(3)])
        wait_for(
            lambda: queue_under_test.connection.stats(queue_under_test.name).ready == 3,
            timeout=10,
            what="stats.ready == 3",
        )
        stats = queue_under_test.connection.stats(queue_under_test.name)
        assert stats.queue == queue_under_test.name
        drain(queue_under_test.connection, queue_under_test.name, 3)
        wait_for(
            lambda: queue_under_test.connection.stats(queue_under_test.name).ready == 0,
            timeout=10,
            what="stats.ready == 0",
        )

    def test_stats_count_delayed_in_flight_and_failed(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """A delayed message counts as delayed, a pulled one as in flight, a dead letter as
        failed (each where the backend can tell: ``None`` otherwise)."""
        _require(queue_under_test, "consume", "stats")
        conn, name = queue_under_test.connection, queue_under_test.name
        caps = conn.capabilities
        expected = {"in_flight": 1, "ready": 0}
        if caps.dead_letters:  # first, so a FIFO group is not blocked by the in-flight one
            _push(queue_under_test, _outgoing({"n": 0}))
            (dead,) = _pull(queue_under_test)
            conn.hook.pashq_dead_letter(queue=name, delivery=dead, reason="x", traceback=None)
            expected["failed"] = 1
        _push(queue_under_test, _outgoing({"n": 1}))
        (pulled,) = _pull(queue_under_test)
        if caps.delay and not caps.fifo_groups:  # FIFO queues may not delay per message
            _push(queue_under_test, _outgoing({"n": 2}, delay=60.0))
            expected["delayed"] = 1

        def counts() -> dict[str, int | None]:
            stats = conn.stats(name)
            return {k: getattr(stats, k) for k in expected}

        wait_for(
            lambda: all(v is None or v == expected[k] for k, v in counts().items()),
            timeout=10,
            what=f"stats {expected}",
        )
        _ack(queue_under_test, [pulled])


class PurgeContract(_Contract):
    """Purge empties a queue."""

    def test_purge_deletes_waiting_messages(self, queue_under_test: QueueUnderTest) -> None:
        """After purge nothing is delivered."""
        _require(queue_under_test, "consume", "purge")
        _push(queue_under_test, *[_outgoing({"n": i}) for i in range(3)])
        if queue_under_test.connection.capabilities.stats:
            wait_for(
                lambda: queue_under_test.connection.stats(queue_under_test.name).ready == 3,
                timeout=10,
            )
        assert queue_under_test.connection.purge(queue_under_test.name) in (0, 3)
        assert _pull(queue_under_test, timeout=1.0) == []

    def test_purge_keeps_dead_letters(self, queue_under_test: QueueUnderTest) -> None:
        """Purging a queue leaves its dead letters alone."""
        _require(queue_under_test, "consume", "purge", "dead_letters")
        conn, name = queue_under_test.connection, queue_under_test.name
        _push(queue_under_test, _outgoing())
        (delivery,) = _pull(queue_under_test)
        conn.hook.pashq_dead_letter(queue=name, delivery=delivery, reason="x", traceback=None)
        wait_for(lambda: conn.failed(name))
        conn.purge(name)
        assert [d.id for d in conn.failed(name)] == [delivery.id]


class QueueListingContract(_Contract):
    """``pashq_queues`` names the queues that hold messages or dead letters, once each."""

    def _listed(self, qut: QueueUnderTest) -> list[str]:
        _require(qut, "list_queues")
        listed: list[str] | None = qut.connection.hook.pashq_queues()
        if listed is None:
            pytest.skip("the driver cannot list queues on this connection (it answered None)")
        return listed

    def _ours(self, qut: QueueUnderTest) -> list[str]:
        return [n for n in self._listed(qut) if n.startswith(qut.name)]

    def test_queue_holding_messages_is_listed_once_without_helper_queues(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """A queue with waiting (and, where the driver delays, delayed) messages is listed
        once, by its pashq name, and no helper queue of the driver appears beside it."""
        qut = queue_under_test
        self._listed(qut)
        _require(qut, "consume")
        messages = [_outgoing({"n": 1})]
        if qut.connection.capabilities.delay:
            messages.append(_outgoing({"n": 2}, delay=30.0))  # drivers may add delay queues
        with warnings.catch_warnings():
            # Some queue kinds ignore per-message delays and warn (SQS FIFO): not the point.
            warnings.simplefilter("ignore")
            _push(qut, *messages)
        ours = wait_for(lambda: self._ours(qut), timeout=20, what=f"{qut.name!r} in pashq_queues()")
        assert ours == [qut.name]
        listed = self._listed(qut)
        assert all(isinstance(n, str) for n in listed)
        assert len(set(listed)) == len(listed)
        assert qut.name in qut.connection.queues()

    def test_queue_holding_only_dead_letters_is_listed(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """A queue whose only messages are dead letters is still listed, once."""
        qut = queue_under_test
        self._listed(qut)
        _require(qut, "consume", "dead_letters")
        _push(qut, _outgoing())
        (delivery,) = _pull(qut)
        qut.connection.hook.pashq_dead_letter(
            queue=qut.name, delivery=delivery, reason="x", traceback=None
        )
        wait_for(lambda: qut.connection.failed(qut.name), timeout=10)
        ours = wait_for(lambda: self._ours(qut), timeout=20, what=f"{qut.name!r} in pashq_queues()")
        assert ours == [qut.name]


class HeadersContract(_Contract):
    """Envelope headers travel unchanged; dispatch options a driver does not know fail."""

    def test_headers_round_trip(self, queue_under_test: QueueUnderTest) -> None:
        """Headers set at dispatch arrive unchanged in the pulled envelope."""
        _require(queue_under_test, "consume")
        conn, name = queue_under_test.connection, queue_under_test.name
        headers = {"trace-id": "00-abc-01", "tenant": "acme", "note": "héllo ✓ " * 10}
        message_id = conn.dispatch(name, Recorded("headers", 1), headers=headers)
        (delivery,) = drain(conn, name, 1)
        envelope = decode_envelope(delivery.body)
        assert (envelope.id, dict(envelope.headers)) == (message_id, headers)

    def test_unknown_dispatch_option_raises_type_error(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """``dispatch(..., no_such_option=1)`` raises ``TypeError`` and stores nothing."""
        _require(queue_under_test, "consume")
        conn, name = queue_under_test.connection, queue_under_test.name
        with pytest.raises(TypeError):
            conn.dispatch(name, Recorded("options", 1), no_such_option=1)
        assert _pull(queue_under_test, timeout=0.5) == []


class PriorityContract(_Contract):
    """Priorities: higher first, FIFO within one priority; refused where unsupported."""

    def test_higher_priority_is_delivered_first(self, queue_under_test: QueueUnderTest) -> None:
        """Messages waiting together are delivered highest priority first, in dispatch
        order within one priority."""
        _require(queue_under_test, "consume", "priorities")
        conn, name = queue_under_test.connection, queue_under_test.name
        order = [0, 5, 9, 5, 0, 1]
        ids = [
            conn.dispatch(name, Recorded("priority", i), priority=p) for i, p in enumerate(order)
        ]
        if conn.capabilities.stats:
            wait_for(lambda: conn.stats(name).ready == len(order), timeout=10)
        got = [d.id for d in drain(conn, name, len(order))]
        expected = [ids[2], ids[1], ids[3], ids[5], ids[0], ids[4]]
        assert got == expected

    def test_priority_without_the_capability_is_refused(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """A driver without ``priorities`` refuses ``priority=`` at dispatch."""
        conn = queue_under_test.connection
        if conn.capabilities.priorities:
            pytest.skip("driver has priorities")
        with pytest.raises(UnsupportedError, match="priorit"):
            conn.dispatch(queue_under_test.name, Recorded("priority", 1), priority=3)


class WorkerContract(_Contract):
    """The worker's contract holds on this driver: typed messages, retries, dead letters."""

    def test_worker_processes_each_message_once(self, queue_under_test: QueueUnderTest) -> None:
        """dispatch_many + Worker.run(until_empty=True): every message processed once."""
        _require(queue_under_test, "consume")
        key = uuid.uuid4().hex
        conn = queue_under_test.connection
        conn.dispatch_many(queue_under_test.name, [Recorded(key, i) for i in range(50)])
        stats = _worker(queue_under_test).run(until_empty=True)
        assert sorted(processed(key)) == list(range(50))
        assert stats.acked == 50

    def test_worker_runs_handlers_in_threads(self, queue_under_test: QueueUnderTest) -> None:
        """concurrency > 1 processes every message once too."""
        _require(queue_under_test, "consume")
        key = uuid.uuid4().hex
        conn = queue_under_test.connection
        conn.dispatch_many(queue_under_test.name, [Recorded(key, i) for i in range(40)])
        _worker(queue_under_test, concurrency=4).run(until_empty=True)
        assert sorted(processed(key)) == list(range(40))

    def test_failing_message_is_retried_then_dead_lettered(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """A handler that always raises runs max_attempts (3) times, then is dead-lettered."""
        _require(queue_under_test, "consume", "dead_letters")
        key = uuid.uuid4().hex
        message_id = queue_under_test.connection.dispatch(queue_under_test.name, AlwaysFails(key))
        stats = _worker(queue_under_test).run(until_empty=True)
        assert len(processed(key)) == 3
        assert stats.retried == 2 and stats.dead_lettered == 1
        dead = wait_for(
            lambda: queue_under_test.connection.failed(queue_under_test.name), timeout=10
        )
        assert [d.id for d in dead] == [message_id]
        assert "RuntimeError: always fails" in dead[0].reason

    def test_invalid_message_is_dead_lettered_without_processing(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """validate_message() False: never processed, dead-lettered on the first attempt."""
        _require(queue_under_test, "consume", "dead_letters")
        key = uuid.uuid4().hex
        queue_under_test.connection.dispatch(queue_under_test.name, Rejected(key))
        stats = _worker(queue_under_test).run(until_empty=True)
        assert processed(key) == []
        assert stats.retried == 0 and stats.dead_lettered == 1
        dead = wait_for(
            lambda: queue_under_test.connection.failed(queue_under_test.name), timeout=10
        )
        assert dead[0].reason == "validate_message() returned False"

    def test_poison_bytes_are_dead_lettered_and_work_goes_on(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """Undecodable bytes and unknown types are dead-lettered; good messages still run."""
        _require(queue_under_test, "consume", "dead_letters")
        key = uuid.uuid4().hex
        garbage = OutgoingMessage(new_message_id(), "garbage", b"\xff not json {")
        unknown = _outgoing({"x": 1}, type_name="nobody.registered.this")
        _push(queue_under_test, garbage, unknown)
        queue_under_test.connection.dispatch(queue_under_test.name, Recorded(key, 7))
        stats = _worker(queue_under_test).run(until_empty=True)
        assert processed(key) == [7]
        assert stats.dead_lettered == 2
        dead = wait_for(
            lambda: len(queue_under_test.connection.failed(queue_under_test.name)) == 2, timeout=10
        )
        assert dead
        reasons = " | ".join(
            d.reason for d in queue_under_test.connection.failed(queue_under_test.name)
        )
        assert "undecodable envelope" in reasons
        assert "unknown message type 'nobody.registered.this'" in reasons


def _in_forked_children(
    count: int, work: Callable[[int, Path], None], folder: Path, timeout: float = 90.0
) -> None:
    """Run ``work(index, folder)`` in ``count`` processes forked from this one, at once.

    A child never returns into the test runner: it leaves through ``os._exit``, with its
    traceback written to ``folder/child-<index>.error`` if ``work`` raised. Fails the test
    with those tracebacks, or when a child outlives ``timeout`` (it is killed).
    """
    if not hasattr(os, "fork"):
        pytest.skip("os.fork is not available on this platform")
    pids: dict[int, int] = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                work(index, folder)
                code = 0
            except BaseException:
                (folder / f"child-{index}.error").write_text(traceback.format_exc())
            finally:
                os._exit(code)
        pids[pid] = index
    deadline = time.monotonic() + timeout
    problems: list[str] = []
    while pids:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            if time.monotonic() > deadline:
                for stuck, index in pids.items():
                    os.kill(stuck, signal.SIGKILL)
                    os.waitpid(stuck, 0)
                    problems.append(f"child {index} still ran after {timeout}s (killed)")
                break
            time.sleep(0.02)
            continue
        index = pids.pop(pid, -1)
        if os.waitstatus_to_exitcode(status) != 0:
            error = folder / f"child-{index}.error"
            text = error.read_text() if error.exists() else f"exit status {status}"
            problems.append(f"child {index} failed:\n{text}")
    assert not problems, "\n".join(problems)


class ForkContract(_Contract):
    """A connection used before ``os.fork`` keeps every promise in the parent and the children.

    Pre-fork servers (gunicorn ``--preload``), ``multiprocessing`` with the ``fork`` start
    method and supervisors fork after the connection was used. The driver must not share a
    socket, a pooled session or a lock between processes: each process gets its own (the
    pid check in the driver), and the child's ``close()`` must not close the parent's.
    """

    def test_dispatch_from_forked_children_is_stored(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """Parent and three forked children dispatch at once: every returned id is stored."""
        _require(queue_under_test, "consume", "persistent")
        conn = queue_under_test.connection
        name = queue_under_test.name
        key = uuid.uuid4().hex
        ids = [conn.dispatch(name, Recorded(key, -1))]  # used before the fork

        def child(index: int, folder: Path) -> None:
            sent = [conn.dispatch(name, Recorded(key, index * 1000 + n)) for n in range(40)]
            conn.close()
            (folder / f"child-{index}.ids").write_text("\n".join(sent))

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            _in_forked_children(3, child, folder)
            for index in range(3):
                ids += (folder / f"child-{index}.ids").read_text().split("\n")
        ids += [conn.dispatch(name, Recorded(key, -2))]  # and still works after
        got = drain(conn, name, len(ids), timeout=60)
        assert sorted(d.id for d in got) == sorted(ids)
        assert _pull(queue_under_test, timeout=0.5) == []

    def test_forked_workers_process_each_message_once(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """Two Workers forked from a used connection share one queue: each message runs once."""
        _require(queue_under_test, "consume", "persistent")
        conn = queue_under_test.connection
        name = queue_under_test.name
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            log = str(folder / "processed.log")
            conn.dispatch_many(name, [AppendToFile(log, n) for n in range(60)])

            def child(index: int, folder: Path) -> None:
                _worker(queue_under_test, concurrency=2).run(until_empty=True)
                conn.close()

            _in_forked_children(2, child, folder)
            # The parent's connection still works, and the queue is empty.
            conn.dispatch(name, AppendToFile(log, 60))
            _worker(queue_under_test).run(until_empty=True)
            done = Path(log).read_text().split()
        assert sorted(int(n) for n in done) == list(range(61))


class MoveContract(_Contract):
    """The optional hooks of ``pashq move``: claiming waiting messages with their due time,
    storing moved messages with their attempts, keeping moved dead letters."""

    def test_claim_waiting_takes_delayed_messages_with_their_due_time(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """``pashq_claim_waiting`` reserves ready and delayed messages, ready ones first,
        each with the seconds until it is due; acked, they are gone."""
        _require(queue_under_test, "consume", "claim_waiting", "delay")
        ready, later = _outgoing({"n": 1}), _outgoing({"n": 2}, delay=60)
        _push(queue_under_test, ready, later)
        claimed = queue_under_test.connection.hook.pashq_claim_waiting(
            queue=queue_under_test.name, max_messages=10
        )
        assert [w.delivery.id for w in claimed] == [ready.id, later.id]
        assert claimed[0].due_in == 0
        assert 50 < claimed[1].due_in <= 60
        assert claimed[1].delivery.body == later.body
        _ack(queue_under_test, [w.delivery for w in claimed])
        again = queue_under_test.connection.hook.pashq_claim_waiting(
            queue=queue_under_test.name, max_messages=10
        )
        assert again == []

    def test_claimed_delayed_message_does_not_come_back_early(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """A delayed message claimed and never acked (a move that died) is not delivered
        before its due time, even after the lease, and is claimed again with its due time."""
        _require(queue_under_test, "consume", "claim_waiting", "delay", "lease")
        assert queue_under_test.lease, "fixture must report the lease it configured"
        later = _outgoing(delay=60)
        _push(queue_under_test, later)
        (claimed,) = queue_under_test.connection.hook.pashq_claim_waiting(
            queue=queue_under_test.name, max_messages=10
        )
        assert _pull(queue_under_test, timeout=queue_under_test.lease + 1.0) == []
        (again,) = queue_under_test.connection.hook.pashq_claim_waiting(
            queue=queue_under_test.name, max_messages=10
        )
        assert again.delivery.id == later.id
        assert 0 < again.due_in < claimed.due_in

    def test_moved_message_keeps_its_attempts(self, queue_under_test: QueueUnderTest) -> None:
        """``pashq_push_moved`` stores a message whose next delivery counts one more than
        the attempts it brought."""
        _require(queue_under_test, "consume", "store_attempts")
        message = _outgoing()
        ids = queue_under_test.connection.hook.pashq_push_moved(
            queue=queue_under_test.name, messages=[MovedMessage(message, 3)]
        )
        assert ids == [message.id]
        (delivery,) = _pull(queue_under_test)
        assert delivery.attempts == 4
        assert delivery.body == message.body
        _ack(queue_under_test, [delivery])

    def test_moved_dead_letters_are_kept_with_their_reason(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """``pashq_failed_store`` keeps dead letters with id, body, reason, traceback and
        attempts; they are listed and retried like the driver's own."""
        _require(queue_under_test, "consume", "dead_letters", "store_dead_letters")
        first, second = _outgoing({"n": 1}), _outgoing({"n": 2})
        dead = [
            DeadLetter(first.id, "elsewhere", first.body, "bad input: 1", "Traceback: a", 5),
            DeadLetter(second.id, "elsewhere", second.body, "bad input: 2", None, 1),
        ]
        ids = queue_under_test.connection.hook.pashq_failed_store(
            queue=queue_under_test.name, dead_letters=dead
        )
        assert ids == [first.id, second.id]

        def both() -> list[DeadLetter]:
            found = queue_under_test.connection.failed(queue_under_test.name)
            return found if len(found) == 2 else []

        listed = wait_for(both, timeout=10, what="the moved dead letters to be listed")
        by_id = {d.id: d for d in listed}
        assert set(by_id) == {first.id, second.id}
        assert by_id[first.id].reason == "bad input: 1"
        assert by_id[first.id].traceback == "Traceback: a"
        assert by_id[first.id].attempts == 5
        assert by_id[first.id].body == first.body
        assert by_id[second.id].reason == "bad input: 2"
        assert queue_under_test.connection.retry_failed(queue_under_test.name) == 2
        back = drain(queue_under_test.connection, queue_under_test.name, 2)
        assert sorted(d.body for d in back) == sorted([first.body, second.body])


class DriverContract(
    BasicContract,
    BatchContract,
    IsolationContract,
    BodyContract,
    HeadersContract,
    NackContract,
    DelayContract,
    LeaseContract,
    CrashRecoveryContract,
    DeadLetterContract,
    StatsContract,
    PurgeContract,
    QueueListingContract,
    PriorityContract,
    MoveContract,
    WorkerContract,
    ForkContract,
):
    """The whole contract: subclass it and override the ``queue_under_test`` fixture."""

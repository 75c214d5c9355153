"""The coordination contract: holds, sliding windows, unique push and defer.

Like the rest of the suite, the tests take the ``queue_under_test`` fixture and skip when
the driver does not declare the capability (``coordination``, ``defer``). Keys are made
from the fresh queue's name, so runs never see each other's state.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from pashq.coordination import Acquired
from pashq.testing.contract import _ack, _Contract, _outgoing, _pull, _push, _require
from pashq.testing.support import QueueUnderTest, drain, wait_for

__all__ = ["CoordinationContract", "DeferContract"]


def _key(qut: QueueUnderTest, name: str) -> str:
    return f"contract:{qut.name}:{name}"


def _owner() -> str:
    return uuid.uuid4().hex


def _acquire(qut: QueueUnderTest, key: str, owner: str, ttl: float, limit: int = 1) -> Acquired:
    got: Acquired = qut.connection.hook.pashq_lock_acquire(
        key=key, owner=owner, ttl=ttl, limit=limit
    )
    return got


def _release(qut: QueueUnderTest, key: str, owner: str) -> bool:
    return bool(qut.connection.hook.pashq_lock_release(key=key, owner=owner))


def _extend(qut: QueueUnderTest, key: str, owner: str, ttl: float) -> bool:
    return bool(qut.connection.hook.pashq_lock_extend(key=key, owner=owner, ttl=ttl))


def _window(qut: QueueUnderTest, key: str, limit: int, period: float) -> float:
    wait: float = qut.connection.hook.pashq_window_add(key=key, limit=limit, period=period)
    return wait


class CoordinationContract(_Contract):
    """Holds (locks and semaphores) and sliding windows, on the backend's clock."""

    def test_free_key_is_taken_by_its_owner(self, queue_under_test: QueueUnderTest) -> None:
        """Acquiring a free key takes it: ``taken``, the owner as holder, no wait."""
        _require(queue_under_test, "coordination")
        owner = _owner()
        got = _acquire(queue_under_test, _key(queue_under_test, "a"), owner, 30.0)
        assert got == Acquired(True, owner, 0.0)

    def test_held_key_is_refused_with_holder_and_wait(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """A second owner is refused and told who holds the key and for how long."""
        _require(queue_under_test, "coordination")
        key, first = _key(queue_under_test, "a"), _owner()
        assert _acquire(queue_under_test, key, first, 30.0).taken
        got = _acquire(queue_under_test, key, _owner(), 30.0)
        assert not got.taken
        assert got.holder == first
        assert 0 < got.wait <= 30.0

    def test_owner_taking_again_refreshes_its_hold(self, queue_under_test: QueueUnderTest) -> None:
        """The holder acquiring again is taken (one hold, a fresh ttl), not refused."""
        _require(queue_under_test, "coordination")
        key, owner = _key(queue_under_test, "a"), _owner()
        assert _acquire(queue_under_test, key, owner, 30.0).taken
        assert _acquire(queue_under_test, key, owner, 60.0).taken
        refused = _acquire(queue_under_test, key, _owner(), 30.0)
        assert not refused.taken and refused.wait > 30.0

    def test_keys_are_independent(self, queue_under_test: QueueUnderTest) -> None:
        """A hold on one key does not block another, nor a key that differs in case."""
        _require(queue_under_test, "coordination")
        assert _acquire(queue_under_test, _key(queue_under_test, "a"), _owner(), 30.0).taken
        assert _acquire(queue_under_test, _key(queue_under_test, "b"), _owner(), 30.0).taken
        assert _acquire(queue_under_test, _key(queue_under_test, "A"), _owner(), 30.0).taken

    def test_only_the_owner_releases(self, queue_under_test: QueueUnderTest) -> None:
        """Release by another owner is refused and changes nothing; the owner's frees it."""
        _require(queue_under_test, "coordination")
        key, owner, other = _key(queue_under_test, "a"), _owner(), _owner()
        assert _acquire(queue_under_test, key, owner, 30.0).taken
        assert _release(queue_under_test, key, other) is False
        assert not _acquire(queue_under_test, key, other, 30.0).taken
        assert _release(queue_under_test, key, owner) is True
        assert _release(queue_under_test, key, owner) is False
        assert _acquire(queue_under_test, key, other, 30.0).taken

    def test_expired_hold_is_free(self, queue_under_test: QueueUnderTest) -> None:
        """After its ttl a hold no longer blocks anyone (and its owner cannot release it)."""
        _require(queue_under_test, "coordination")
        key, owner = _key(queue_under_test, "a"), _owner()
        assert _acquire(queue_under_test, key, owner, 0.5).taken
        other = _owner()
        wait_for(
            lambda: _acquire(queue_under_test, key, other, 30.0).taken,
            timeout=15.0,
            interval=0.1,
            what="the expired hold to free the key",
        )
        assert _release(queue_under_test, key, owner) is False

    def test_only_the_owner_extends(self, queue_under_test: QueueUnderTest) -> None:
        """Extending keeps the hold past its first ttl; another owner cannot extend it."""
        _require(queue_under_test, "coordination")
        key, owner, other = _key(queue_under_test, "a"), _owner(), _owner()
        assert _acquire(queue_under_test, key, owner, 1.0).taken
        assert _extend(queue_under_test, key, other, 60.0) is False
        assert _extend(queue_under_test, key, owner, 60.0) is True
        time.sleep(1.5)  # the first ttl is over: only the extension keeps it held
        got = _acquire(queue_under_test, key, other, 30.0)
        assert not got.taken and got.holder == owner and got.wait > 30.0

    def test_expired_hold_cannot_be_extended(self, queue_under_test: QueueUnderTest) -> None:
        """An extension after the ttl ran out does not revive the hold."""
        _require(queue_under_test, "coordination")
        key, owner = _key(queue_under_test, "a"), _owner()
        assert _acquire(queue_under_test, key, owner, 0.3).taken
        time.sleep(1.0)
        assert _extend(queue_under_test, key, owner, 60.0) is False
        assert _acquire(queue_under_test, key, _owner(), 30.0).taken

    def test_limit_allows_that_many_holders(self, queue_under_test: QueueUnderTest) -> None:
        """With ``limit=3`` three owners hold the key, a fourth waits for a release."""
        _require(queue_under_test, "coordination")
        key = _key(queue_under_test, "sem")
        owners = [_owner() for _ in range(3)]
        assert all(_acquire(queue_under_test, key, o, 30.0, limit=3).taken for o in owners)
        late = _owner()
        refused = _acquire(queue_under_test, key, late, 30.0, limit=3)
        assert not refused.taken and refused.holder in owners and refused.wait > 0
        assert _release(queue_under_test, key, owners[1])
        assert _acquire(queue_under_test, key, late, 30.0, limit=3).taken
        assert not _acquire(queue_under_test, key, _owner(), 30.0, limit=3).taken

    def test_racing_owners_get_one_hold(self, queue_under_test: QueueUnderTest) -> None:
        """Eight threads racing for one free key: exactly one takes it, all name it."""
        _require(queue_under_test, "coordination")
        key = _key(queue_under_test, "race")
        owners = [_owner() for _ in range(8)]
        results: dict[str, Acquired] = {}
        barrier = threading.Barrier(len(owners))

        def take(owner: str) -> None:
            barrier.wait()
            results[owner] = _acquire(queue_under_test, key, owner, 30.0)

        threads = [threading.Thread(target=take, args=(o,)) for o in owners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        winners = [o for o, got in results.items() if got.taken]
        assert len(results) == len(owners)
        assert len(winners) == 1
        assert {got.holder for got in results.values()} == {winners[0]}

    def test_racing_semaphore_never_exceeds_its_limit(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """Twelve threads racing for ``limit=3``: exactly three take a place."""
        _require(queue_under_test, "coordination")
        key = _key(queue_under_test, "sem-race")
        barrier = threading.Barrier(12)
        taken: list[bool] = []
        lock = threading.Lock()

        def take() -> None:
            barrier.wait()
            got = _acquire(queue_under_test, key, _owner(), 30.0, limit=3)
            with lock:
                taken.append(got.taken)

        threads = [threading.Thread(target=take) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(taken) == 12 and taken.count(True) == 3

    def test_long_key_and_owner(self, queue_under_test: QueueUnderTest) -> None:
        """Keys of 200 characters (any Unicode) and owners of 64 are stored exactly."""
        _require(queue_under_test, "coordination")
        base = _key(queue_under_test, "é")
        key = (base + "x" * 200)[:200]
        owner = "o" * 64
        assert _acquire(queue_under_test, key, owner, 30.0).taken
        assert _acquire(queue_under_test, key, "p" * 64, 30.0).holder == owner
        assert _acquire(queue_under_test, key[:-1] + "y", "p" * 64, 30.0).taken

    def test_window_counts_up_to_its_limit(self, queue_under_test: QueueUnderTest) -> None:
        """``limit`` events are counted at once; the next is refused with a wait <= period."""
        _require(queue_under_test, "coordination")
        key = _key(queue_under_test, "rate")
        assert [_window(queue_under_test, key, 3, 30.0) for _ in range(3)] == [0.0] * 3
        wait = _window(queue_under_test, key, 3, 30.0)
        assert 0 < wait <= 30.0
        assert _window(queue_under_test, _key(queue_under_test, "rate2"), 3, 30.0) == 0.0

    def test_window_slides(self, queue_under_test: QueueUnderTest) -> None:
        """After the wait it answered, the window counts again (and not before)."""
        _require(queue_under_test, "coordination")
        key = _key(queue_under_test, "slide")
        assert _window(queue_under_test, key, 2, 1.0) == 0.0
        assert _window(queue_under_test, key, 2, 1.0) == 0.0
        wait = _window(queue_under_test, key, 2, 1.0)
        assert 0 < wait <= 1.0
        time.sleep(wait + 0.05)
        assert _window(queue_under_test, key, 2, 1.0) == 0.0

    def test_racing_window_counts_exactly_its_limit(self, queue_under_test: QueueUnderTest) -> None:
        """Ten threads adding five events each to a window of 7 per 60 s: 7 counted."""
        _require(queue_under_test, "coordination")
        key = _key(queue_under_test, "rate-race")
        barrier = threading.Barrier(10)
        counted: list[bool] = []
        lock = threading.Lock()

        def add() -> None:
            barrier.wait()
            for _ in range(5):
                wait = _window(queue_under_test, key, 7, 60.0)
                with lock:
                    counted.append(wait == 0.0)

        threads = [threading.Thread(target=add) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(counted) == 50 and counted.count(True) == 7

    def test_push_unique_stores_once_and_names_the_holder(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """``pashq_push_unique`` (where implemented): a key's first message is stored, a
        later one with the same key is not and answers the first's id."""
        _require(queue_under_test, "coordination", "consume")
        hook = queue_under_test.connection.hook
        if not hook.pashq_push_unique.get_hookimpls():
            pytest.skip("driver has no pashq_push_unique (the core guards the push)")
        key = _key(queue_under_test, "unique")
        first, second, free = _outgoing({"n": 1}), _outgoing({"n": 2}), _outgoing({"n": 3})
        answer = hook.pashq_push_unique(
            queue=queue_under_test.name,
            messages=[first, second, free],
            keys=[key, key, None],
            ttls=[30.0, 30.0, 0.0],
            options={},
        )
        assert answer == [first.id, first.id, free.id]
        again = hook.pashq_push_unique(
            queue=queue_under_test.name, messages=[second], keys=[key], ttls=[30.0], options={}
        )
        assert again == [first.id]
        got = drain(queue_under_test.connection, queue_under_test.name, 2)
        assert sorted(d.id for d in got) == sorted([first.id, free.id])
        assert _pull(queue_under_test, timeout=1.0) == []

    def test_push_unique_takes_an_expired_key(self, queue_under_test: QueueUnderTest) -> None:
        """``pashq_push_unique`` (where implemented): a key whose hold expired is free."""
        _require(queue_under_test, "coordination", "consume")
        hook = queue_under_test.connection.hook
        if not hook.pashq_push_unique.get_hookimpls():
            pytest.skip("driver has no pashq_push_unique (the core guards the push)")
        old, fresh = _key(queue_under_test, "old"), _key(queue_under_test, "fresh")
        assert _acquire(queue_under_test, old, _owner(), 0.3).taken
        time.sleep(1.0)
        a, b = _outgoing({"n": 1}), _outgoing({"n": 2})
        answer = hook.pashq_push_unique(
            queue=queue_under_test.name,
            messages=[a, b],
            keys=[old, fresh],
            ttls=[30.0, 30.0],
            options={},
        )
        assert answer == [a.id, b.id]
        assert _acquire(queue_under_test, old, _owner(), 30.0).holder == a.id
        drain(queue_under_test.connection, queue_under_test.name, 2)


class DeferContract(_Contract):
    """``pashq_defer``: a delivery released without counting the attempt."""

    def test_deferred_delivery_keeps_its_attempt_count(
        self, queue_under_test: QueueUnderTest
    ) -> None:
        """Deferred twice, the message is delivered again with ``attempts`` still 1."""
        _require(queue_under_test, "consume", "defer")
        message = _outgoing({"n": 1})
        _push(queue_under_test, message)
        for _ in range(2):
            (delivery,) = _pull(queue_under_test)
            assert delivery.attempts == 1
            queue_under_test.connection.hook.pashq_defer(
                queue=queue_under_test.name, deliveries=[delivery], delay=0.0
            )
        (delivery,) = _pull(queue_under_test)
        assert delivery.id == message.id and delivery.attempts == 1
        _ack(queue_under_test, [delivery])

    def test_deferred_delivery_waits_its_delay(self, queue_under_test: QueueUnderTest) -> None:
        """A delivery deferred by 1.5 s is not delivered before it (and is after)."""
        _require(queue_under_test, "consume", "defer", "nack_delay")
        _push(queue_under_test, _outgoing())
        (delivery,) = _pull(queue_under_test)
        started = time.monotonic()
        queue_under_test.connection.hook.pashq_defer(
            queue=queue_under_test.name, deliveries=[delivery], delay=1.5
        )
        (again,) = drain(queue_under_test.connection, queue_under_test.name, 1, timeout=20.0)
        assert time.monotonic() - started >= 1.4
        assert again.attempts == 1

"""Settlement races and stale state: the heartbeat, repeated runs, signals during a stop.

Each test wraps the driver's hooks with a small recording plugin (a pluggy wrapper on the
connection's plugin manager), so the order of the core's calls is what is asserted. The
heartbeat test also runs on SQLite through the database driver, where an extension landing
after a retry's nack made the retry come back early.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from pashq import Message, Worker, hookimpl
from pashq.connection import Connection
from pashq.delivery import Delivery, OutgoingMessage
from pashq.envelope import Envelope, encode_envelope, utc_timestamp
from pashq.testing import make_connection, wait_for
from pashq.testing.messages import AlwaysFails

_extending = threading.Event()
_started = threading.Event()
_release_stale = threading.Event()
_seen: dict[str, list[int]] = {}
_seen_lock = threading.Lock()


def _saw(key: str, n: int) -> None:
    with _seen_lock:
        _seen.setdefault(key, []).append(n)


def _seen_of(key: str) -> list[int]:
    with _seen_lock:
        return list(_seen.get(key, []))


@attrs.define
class FailsDuringExtension(Message, type_name="tests.settlement.fails_during_extension"):
    """Fails once a lease extension is in flight, so the retry's nack races the extension."""

    retry_delay = 30.0
    retry_delay_max = 30.0

    def process_message(self) -> None:
        assert _extending.wait(10), "the heartbeat never extended the lease"
        raise RuntimeError("fails while the lease is being extended")


@attrs.define
class Step(Message, type_name="tests.settlement.step"):
    """Records ``n`` under ``key``; ``block`` waits for the test; ``signals`` sends SIGINTs."""

    key: str
    n: int
    block: bool = False
    signals: int = 0
    seconds: float = 0.0

    def process_message(self) -> None:
        if self.block:
            _started.set()
            _release_stale.wait(30)
        for _ in range(self.signals):
            os.kill(os.getpid(), signal.SIGINT)
        if self.seconds:
            time.sleep(self.seconds)
        _saw(self.key, self.n)


class Recorder:
    """Records the order of settle and extend calls; makes an extension slow on demand."""

    def __init__(self, slow_extend: float = 0.0) -> None:
        self.calls: list[tuple[str, str]] = []
        self.slow_extend = slow_extend
        self.settled = threading.Event()
        self.on_ack: list[Any] = []

    def _note(self, what: str, deliveries: Sequence[Delivery]) -> None:
        self.calls.extend((what, d.id) for d in deliveries)

    @hookimpl(wrapper=True)
    def pashq_extend(
        self, queue: str, deliveries: Sequence[Delivery], seconds: float
    ) -> Generator[None, None, None]:
        if self.slow_extend:
            _extending.set()
            # A slow round trip: the settlement, if the worker lets it, happens meanwhile.
            self.settled.wait(self.slow_extend)
        result = yield
        self._note("extend", deliveries)
        return result

    @hookimpl(wrapper=True)
    def pashq_nack(
        self, queue: str, deliveries: Sequence[Delivery], delay: float
    ) -> Generator[None, None, None]:
        self.settled.set()
        result = yield
        self._note("nack", deliveries)
        return result

    @hookimpl(wrapper=True)
    def pashq_ack(self, queue: str, deliveries: Sequence[Delivery]) -> Generator[None, None, None]:
        for action in self.on_ack:
            action()
        result = yield
        self._note("ack", deliveries)
        return result


def _memory(**options: Any) -> Connection:
    return make_connection({"type": "memory", **options})


@pytest.fixture(params=["memory", "sqlite"])
def leased_connection(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connection]:
    """A connection with a one-second lease: memory, and the database driver on SQLite."""
    if request.param == "memory":
        conn = _memory(lease=1.0)
    else:
        conn = make_connection(
            {
                "type": "database",
                "url": f"sqlite:///{tmp_path / 'settle.sqlite3'}",
                "create_tables": True,
                "lease": 1.0,
                "poll_interval": 0.05,
            }
        )
    yield conn
    conn.close()


def test_heartbeat_never_extends_a_delivery_after_it_was_settled(
    leased_connection: Connection,
) -> None:
    """An extension in flight when the handler fails finishes before the retry's nack."""
    _extending.clear()
    recorder = Recorder(slow_extend=1.0)
    leased_connection.plugin_manager.register(recorder)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    message_id = leased_connection.dispatch(queue, FailsDuringExtension())
    worker = Worker(queue, connection=leased_connection, install_signal_handlers=False)
    worker.max_messages = 1
    stats = worker.run()
    assert stats.retried == 1
    mine = [what for what, i in recorder.calls if i == message_id]
    assert "nack" in mine
    assert "extend" not in mine[mine.index("nack") :], (mine, recorder.calls)
    # The retry's backoff (30 s) holds: the message does not come back after one lease.
    time.sleep(0.1)
    got = leased_connection.hook.pashq_pull(queue=queue, max_messages=1, timeout=1.5)
    assert got == []


def test_run_again_after_an_unclean_stop_starts_with_nothing_held() -> None:
    """A handler that outlived shutdown_timeout does not leak into the next run."""
    _started.clear()
    _release_stale.clear()
    conn = _memory(lease=30.0)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    conn.dispatch(queue, Step(key, 0, block=True))
    worker = Worker(
        queue, connection=conn, concurrency=2, shutdown_timeout=0.2, install_signal_handlers=False
    )
    first = threading.Thread(target=worker.run)
    first.start()
    assert _started.wait(10)
    worker.stop()
    first.join(10)
    assert not first.is_alive()
    # The first run left its handler running. A second run must drain new work and end.
    conn.dispatch_many(queue, [Step(key, n) for n in range(1, 6)])
    outcome: dict[str, Any] = {}
    second = threading.Thread(target=lambda: outcome.update(stats=worker.run(until_empty=True)))
    second.start()
    second.join(20)
    finished = not second.is_alive()
    _release_stale.set()
    second.join(10)
    assert finished, "until_empty never finished: stale state from the first run"
    assert sorted(_seen_of(key)) == [1, 2, 3, 4, 5]
    assert outcome["stats"].acked == 5
    # The stale handler's late result is not counted by (or settled in) the second run.
    wait_for(lambda: 0 in _seen_of(key), timeout=10)
    assert outcome["stats"].acked == 5
    conn.close()


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals need main"
)
def test_a_third_signal_during_the_stop_does_not_lose_pending_acks() -> None:
    """Signals arriving while a stop-at-once flushes its acks are ignored, not raised."""
    conn = _memory(lease=30.0)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    recorder = Recorder()
    recorder.on_ack.append(lambda: os.kill(os.getpid(), signal.SIGINT))
    conn.plugin_manager.register(recorder)
    conn.dispatch_many(queue, [Step(key, 0), Step(key, 1, signals=2), Step(key, 2)])
    worker = Worker(queue, connection=conn, install_signal_handlers=True)
    stats = worker.run()  # returns (does not raise) although the ack sent a third signal
    assert stats.interrupted
    assert _seen_of(key) == [0]
    assert [what for what, _ in recorder.calls].count("ack") == 1
    # The finished message was acked; the interrupted one and the unstarted one come back.
    assert conn.stats(queue).in_flight == 1  # the interrupted one, until its lease
    assert conn.stats(queue).ready == 1
    conn.close()


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals need main"
)
def test_the_shutdown_timer_of_one_run_does_not_stop_the_next() -> None:
    """A graceful stop's shutdown_timeout timer is cancelled when its run ends."""
    conn = _memory(lease=30.0)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    conn.dispatch(queue, Step(key, 0, signals=1))
    worker = Worker(queue, connection=conn, shutdown_timeout=0.8, install_signal_handlers=True)
    first = worker.run()
    assert first.acked == 1 and not first.interrupted
    conn.dispatch_many(queue, [Step(key, n, seconds=0.5) for n in range(1, 4)])
    second = worker.run(until_empty=True)  # takes ~1.5 s, past the first run's timer
    assert second.acked == 3 and second.released == 0
    assert sorted(_seen_of(key)) == [0, 1, 2, 3]
    conn.close()


def _raw(queue: str, conn: Connection, transport_id: str, envelope_id: str) -> None:
    envelope = Envelope(envelope_id, AlwaysFails.type_name, {"key": "x"}, utc_timestamp(), {})
    message = OutgoingMessage(transport_id, AlwaysFails.type_name, encode_envelope(envelope))
    conn.hook.pashq_push(queue=queue, messages=[message], options={})


def test_the_envelope_id_wins_over_a_transport_id() -> None:
    """A delivery whose driver-level id differs from the envelope's is known by the envelope's."""
    conn = _memory()
    queue = f"q-{uuid.uuid4().hex[:8]}"
    envelope_id = uuid.uuid4().hex
    _raw(queue, conn, "foreign-transport-id", envelope_id)
    Worker(queue, connection=conn, install_signal_handlers=False).run(until_empty=True)
    assert [d.id for d in conn.failed(queue)] == [envelope_id]
    assert conn.retry_failed(queue, [envelope_id]) == 1
    conn.close()

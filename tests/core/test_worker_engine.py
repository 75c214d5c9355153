"""The worker engine: prefetch, async handlers on one loop, time limits, instant
``until_empty``, clean stops, settlement retries and waiting for a backend at start.

Each runs on ``memory`` and on SQLite through the database driver (``backend``). Calls to
the driver are observed through small pluggy wrappers on the connection's plugin manager;
waits are on conditions, never on the clock alone.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import pashq
from pashq import Worker, hookimpl
from pashq.connection import Connection
from pashq.delivery import Delivery
from pashq.errors import DriverError
from pashq.testing import make_connection, wait_for

from . import engine_messages as em


def _queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Connection]:
    """``memory`` and the database driver on SQLite, both with a 2 s lease."""
    if request.param == "memory":
        conn = make_connection({"type": "memory", "lease": 2.0})
    else:
        conn = make_connection(
            {
                "type": "database",
                "url": f"sqlite:///{tmp_path / 'engine.sqlite3'}",
                "create_tables": True,
                "lease": 2.0,
                "poll_interval": 0.05,
            }
        )
    yield conn
    conn.close()


class Calls:
    """Records pulls (``max_messages`` asked, count got) and acks; can fail acks/declares."""

    def __init__(self, failing_acks: int = 0, failing_declares: int = 0) -> None:
        self.pulls: list[tuple[int, int]] = []
        self.acks: list[float] = []
        self.acked: list[str] = []
        self.failing_acks = failing_acks
        self.failing_declares = failing_declares

    @hookimpl(wrapper=True)
    def pashq_pull(
        self, queue: str, max_messages: int, timeout: float
    ) -> Generator[None, list[Delivery], list[Delivery]]:
        got = yield
        if got:
            self.pulls.append((max_messages, len(got)))
        return got

    @hookimpl(wrapper=True)
    def pashq_ack(self, queue: str, deliveries: Sequence[Delivery]) -> Generator[None, None, None]:
        if self.failing_acks:
            self.failing_acks -= 1
            raise DriverError("ack failed: the backend is restarting (injected)")
        result = yield
        self.acks.append(time.monotonic())
        self.acked.extend(d.id for d in deliveries)
        return result

    @hookimpl(tryfirst=True)
    def pashq_declare(self, queue: str) -> None:
        if self.failing_declares:
            self.failing_declares -= 1
            raise DriverError("backend unreachable (injected)")


def _worker(conn: Connection, queue: str, **kwargs: Any) -> Worker:
    return Worker(queue, connection=conn, install_signal_handlers=False, **kwargs)


# -- 1. prefetch ---------------------------------------------------------------------------


def test_short_handlers_are_pulled_in_whole_batches(backend: Connection) -> None:
    """Trivial handlers at concurrency 4: pulls ask for far more than 2 x concurrency."""
    calls = Calls()
    backend.plugin_manager.register(calls)
    queue, key = _queue(), uuid.uuid4().hex
    backend.dispatch_many(queue, [em.Quick(key, n) for n in range(3000)])
    stats = _worker(backend, queue, concurrency=4).run(until_empty=True)
    assert stats.acked == 3000 and em.count(key) == 3000
    assert max(asked for asked, _ in calls.pulls) >= 200, calls.pulls
    assert len(calls.pulls) <= 40, calls.pulls  # before: one claim per <= 8 messages


def test_long_handlers_hold_about_one_message_per_slot(backend: Connection) -> None:
    """0.3 s handlers at concurrency 2 leave the rest of the queue to other workers."""
    calls = Calls()
    backend.plugin_manager.register(calls)
    queue, key = _queue(), uuid.uuid4().hex
    backend.dispatch_many(queue, [em.Sleeps(key, 0.3) for _ in range(8)])
    stats = _worker(backend, queue, concurrency=2).run(until_empty=True)
    assert stats.acked == 8
    later = [asked for asked, _ in calls.pulls[1:]]  # the first pull is before any measure
    assert later and max(later) <= 3, calls.pulls


def test_a_fixed_prefetch_caps_what_the_worker_holds(backend: Connection) -> None:
    calls = Calls()
    backend.plugin_manager.register(calls)
    queue, key = _queue(), uuid.uuid4().hex
    backend.dispatch_many(queue, [em.Quick(key, n) for n in range(200)])
    stats = _worker(backend, queue, concurrency=2, prefetch=5).run(until_empty=True)
    assert stats.acked == 200
    assert max(asked for asked, _ in calls.pulls) <= 5, calls.pulls


# -- 2. async handlers ------------------------------------------------------------------------


def test_async_handlers_run_as_tasks_on_one_event_loop(backend: Connection) -> None:
    """300 sleeping async handlers in flight together, without a thread each."""
    queue, key = _queue(), uuid.uuid4().hex
    backend.dispatch_many(queue, [em.AsyncSleeps(key, 0.5) for _ in range(300)])
    before = threading.active_count()
    stats = _worker(backend, queue, concurrency=300).run(until_empty=True)
    assert stats.acked == 300
    assert em.peak[key] >= 100  # they overlapped: one loop runs them concurrently
    assert max(em.threads_seen[-300:]) <= before + 6  # loop + heartbeat, not 300 threads


def test_one_worker_mixes_sync_and_async_handlers(backend: Connection) -> None:
    queue, key_sync, key_async = _queue(), uuid.uuid4().hex, uuid.uuid4().hex
    messages: list[Any] = []
    for _ in range(20):
        messages += [em.Sleeps(key_sync, 0.05), em.AsyncSleeps(key_async, 0.05)]
    backend.dispatch_many(queue, messages)
    stats = _worker(backend, queue, concurrency=4).run(until_empty=True)
    assert stats.acked == 40
    assert em.count(key_sync) == 20 and em.count(key_async) == 20


_CLEAN_EXIT = """
import sys
sys.path.insert(0, {root!r})
import pashq
import engine_messages as em
pashq.configure({{"queues": {{"default": {{"type": "memory"}}}}}})
conn = pashq.queue()
conn.dispatch_many("q", [em.AsyncSleeps("k", 0.01) for _ in range(20)])
conn.dispatch("q", em.AsyncHangs("k"))
stats = pashq.Worker("q").run(until_empty=True)
print("acked", stats.acked, "dead", stats.dead_lettered)
conn.dispatch_many("q", [em.AsyncSleeps("k", 0.05) for _ in range(200)])
stats = pashq.Worker("q", concurrency=50).run(until_empty=True)
print("acked", stats.acked, "dead", stats.dead_lettered)
pashq.close()
"""


def test_async_workers_exit_clean_under_w_error(tmp_path: Path) -> None:
    """No event-loop warnings or 'Exception ignored' at exit (python -W error)."""
    root = str(Path(__file__).resolve().parent)
    script = _CLEAN_EXIT.format(root=root)
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "acked 20 dead 1" in proc.stdout and "acked 200 dead 0" in proc.stdout, proc.stdout
    assert "Exception ignored" not in proc.stderr, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr


# -- 3. time limits -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [em.Hangs, em.AsyncHangs], ids=["sync", "async"])
def test_a_handler_past_its_time_limit_is_retried_then_dead_lettered(
    backend: Connection, cls: type[em.Hangs] | type[em.AsyncHangs]
) -> None:
    """10 s handlers with time_limit=1: two failed attempts, dead-lettered with the reason,
    while the other messages flow."""
    queue, key, others = _queue(), uuid.uuid4().hex, uuid.uuid4().hex
    hang_id = backend.dispatch(queue, cls(key))
    backend.dispatch_many(queue, [em.Sleeps(others, 0.02) for _ in range(30)])
    started = time.monotonic()
    stats = _worker(backend, queue, concurrency=2).run(until_empty=True)
    elapsed = time.monotonic() - started
    assert stats.acked == 30 and em.count(others) == 30
    assert stats.retried == 1 and stats.dead_lettered == 1 and stats.timed_out == 2
    [dead] = backend.failed(queue)
    assert dead.id == hang_id and dead.attempts == 2
    assert "time limit of 1 s exceeded" in dead.reason, dead.reason
    assert elapsed < 15  # two 10 s attempts would take 20 s; a bound, not a speed claim
    assert backend.stats(queue).in_flight == 0


def test_a_sync_handler_looping_in_python_is_interrupted(backend: Connection) -> None:
    queue, key = _queue(), uuid.uuid4().hex
    backend.dispatch(queue, em.Spins(key))
    stats = _worker(backend, queue, concurrency=2).run(until_empty=True)
    assert stats.dead_lettered == 1 and stats.timed_out == 1
    wait_for(lambda: em._now[key] == 0, timeout=8, what="the spinning handler to stop")
    assert em.raised[-1] is pashq.TimeLimitExceeded
    assert issubclass(pashq.TimeLimitExceeded, pashq.PashqError)


def test_time_limit_from_the_worker_and_the_connection_config(tmp_path: Path) -> None:
    conn = make_connection({"type": "memory", "time_limit": 0.5, "max_attempts": 1})
    assert conn.config.retry.time_limit == 0.5
    queue, key = _queue(), uuid.uuid4().hex
    conn.dispatch(queue, em.AsyncSleeps(key, 5))
    stats = _worker(conn, queue, concurrency=2).run(until_empty=True)
    assert stats.dead_lettered == 1
    assert "time limit of 0.5 s exceeded" in conn.failed(queue)[0].reason
    conn.dispatch(queue, em.AsyncSleeps(key, 5))
    stats = _worker(conn, queue, time_limit=0.3).run(until_empty=True)  # the worker's wins
    assert "time limit of 0.3 s exceeded" in conn.failed(queue)[1].reason
    conn.close()


# -- 4. until_empty ---------------------------------------------------------------------------


def test_until_empty_returns_at_once_after_the_last_message(backend: Connection) -> None:
    """With a 5 s poll_timeout, the run ends right after the last ack (the driver says the
    queue is empty), not one more poll_timeout later."""
    calls = Calls()
    backend.plugin_manager.register(calls)
    queue, key = _queue(), uuid.uuid4().hex
    backend.dispatch_many(queue, [em.Quick(key, n) for n in range(2000)])
    for concurrency in (1, 4):
        backend.dispatch_many(queue, [em.Quick(key, n) for n in range(500)])
        worker = _worker(backend, queue, concurrency=concurrency, poll_timeout=5.0)
        stats = worker.run(until_empty=True)
        returned = time.monotonic()
        assert stats.acked >= 500
        assert returned - calls.acks[-1] < 1.0, (concurrency, returned - calls.acks[-1])


def test_until_empty_returns_at_once_on_the_spool_example_driver(tmp_path: Path) -> None:
    conn = make_connection({"type": "spool", "path": str(tmp_path / "spool"), "fsync": False})
    queue, key = _queue(), uuid.uuid4().hex
    conn.dispatch_many(queue, [em.Quick(key, n) for n in range(200)])
    started = time.monotonic()
    stats = _worker(conn, queue, concurrency=2, poll_timeout=5.0).run(until_empty=True)
    assert stats.acked == 200
    assert time.monotonic() - started < 5.0  # before: one more 5 s poll_timeout
    conn.close()


# -- 5. stops, settlement retries, start during an outage ------------------------------------


def test_stop_at_once_releases_queued_work_and_says_interrupted(backend: Connection) -> None:
    em.gate.clear()
    queue, key = _queue(), uuid.uuid4().hex
    backend.dispatch_many(queue, [em.Blocks(key) for _ in range(8)])
    worker = _worker(backend, queue, concurrency=4, batch_size=8)
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(stats=worker.run()))
    thread.start()
    wait_for(lambda: em.count(key) == 4, timeout=20, what="four running handlers")
    worker.stop(immediate=True)
    thread.join(10)
    em.gate.set()
    assert not thread.is_alive()
    stats = outcome["stats"]
    assert stats.interrupted and stats.acked == 0
    assert stats.released == 4  # the four waiting ones are back at once
    assert backend.stats(queue).ready == 4


def test_graceful_stop_past_shutdown_timeout_releases_the_waiting(
    backend: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    em.gate.clear()
    queue, key = _queue(), uuid.uuid4().hex
    backend.dispatch_many(queue, [em.Blocks(key) for _ in range(4)])
    worker = _worker(backend, queue, concurrency=2, batch_size=4, shutdown_timeout=0.5)
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(stats=worker.run()))
    thread.start()
    wait_for(lambda: em.count(key) == 2, timeout=20, what="two running handlers")
    with caplog.at_level(logging.WARNING, logger="pashq.worker"):
        worker.stop()
        thread.join(10)
    em.gate.set()
    assert not thread.is_alive()
    assert outcome["stats"].released == 2
    assert backend.stats(queue).ready == 2
    assert "2 message(s) still running at shutdown" in caplog.text


def test_a_failed_ack_batch_is_retried_not_left_to_the_lease(backend: Connection) -> None:
    """Two failing ack calls (a backend restart) cost no duplicate runs."""
    calls = Calls(failing_acks=2)
    backend.plugin_manager.register(calls)
    queue, key = _queue(), uuid.uuid4().hex
    ids = backend.dispatch_many(queue, [em.Quick(key, n) for n in range(50)])
    stats = _worker(backend, queue, concurrency=2).run(until_empty=True)
    assert stats.errors == 2 and stats.acked == 50
    assert sorted(calls.acked) == sorted(ids)
    time.sleep(2.5)  # past the 2 s lease: nothing may come back (a bound, not a wait for work)
    assert backend.stats(queue).ready == 0 and backend.stats(queue).in_flight == 0
    assert em.count(key) == 50


def test_a_worker_started_during_an_outage_waits_for_the_backend(
    backend: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls(failing_declares=2)
    backend.plugin_manager.register(calls)
    queue, key = _queue(), uuid.uuid4().hex
    backend.dispatch_many(queue, [em.Quick(key, n) for n in range(5)])
    with caplog.at_level(logging.WARNING, logger="pashq.worker"):
        stats = _worker(backend, queue).run(until_empty=True)
    assert stats.acked == 5
    assert "unavailable at start; trying again" in caplog.text
    calls.failing_declares = 1
    with pytest.raises(DriverError, match="unreachable"):
        _worker(backend, queue, fail_fast=True).run(until_empty=True)


def test_time_limit_as_a_class_keyword() -> None:
    from pashq import Message

    class Report(Message, type_name="tests.engine.report", time_limit=30):
        pass

    assert Report.time_limit == 30.0
    with pytest.raises(ValueError, match="time_limit must be a number of seconds > 0"):

        class Bad(Message, type_name="tests.engine.bad", time_limit=0):
            pass


def test_pashq_work_started_during_an_outage_waits_and_fail_fast_exits(tmp_path: Path) -> None:
    """A PostgreSQL server that is not there (a closed port): ``pashq work`` logs and waits
    (SIGTERM stops it, status 0); with ``--fail-fast`` it exits 1 at once."""
    import signal

    config = tmp_path / "pashq.toml"
    config.write_text(
        '[queues.default]\ntype = "database"\n'
        'url = "postgresql+psycopg://postgres@127.0.0.1:1/test"\n'
    )
    command = [sys.executable, "-m", "pashq", "work", "jobs", "--config", str(config)]
    failed = subprocess.run(
        [*command, "--fail-fast"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert failed.returncode == 1 and "Error:" in failed.stderr, failed.stderr
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
        if "unavailable at start; trying again" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + rest


def test_stop_at_once_with_one_slot_keeps_extending_the_running_lease(
    backend: Connection,
) -> None:
    """concurrency=1: the handler runs to its end after stop(immediate=True), and its
    2 s lease is extended meanwhile, so no other consumer gets the message."""
    queue, key = _queue(), uuid.uuid4().hex
    backend.dispatch_many(queue, [em.Sleeps(key, 3.0), em.Quick(key)])
    worker = _worker(backend, queue, batch_size=2)
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(stats=worker.run()))
    thread.start()
    wait_for(lambda: em.count(key) == 1, timeout=20, what="the sleeping handler")
    worker.stop(immediate=True)
    stolen = backend.hook.pashq_pull(queue=queue, max_messages=5, timeout=2.5)
    thread.join(20)
    assert not thread.is_alive()
    assert stolen == []  # both leases (running and unstarted) were kept alive
    stats = outcome["stats"]
    assert stats.interrupted and stats.acked == 1 and stats.released == 1

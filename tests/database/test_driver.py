"""Behaviour of the database driver beyond the contract: statements per batch, fencing,
outbox, missing tables, wake-ups, options and secrets."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from pashq.connection import Connection
from pashq.delivery import Delivery, OutgoingMessage
from pashq.errors import ConfigError, DriverError, MessageTooLargeError, QueueNotFoundError
from pashq.testing import make_connection, wait_for
from pashq_database import DatabaseDriver

from .conftest import BACKENDS, SERVER_BACKENDS, Backends


def _push(conn: Connection, queue: str, count: int, **options: Any) -> list[str]:
    messages = [
        OutgoingMessage(uuid.uuid4().hex, "t", f'{{"n": {i}}}'.encode()) for i in range(count)
    ]
    ids: list[str] = conn.hook.pashq_push(queue=queue, messages=messages, options=options)
    return ids


def _pull(conn: Connection, queue: str, n: int = 500, timeout: float = 0.0) -> list[Delivery]:
    got: list[Delivery] = conn.hook.pashq_pull(queue=queue, max_messages=n, timeout=timeout)
    return got


def _driver(conn: Connection) -> DatabaseDriver:
    assert isinstance(conn.driver, DatabaseDriver)
    return conn.driver


@contextmanager
def _statements(conn: Connection) -> Iterator[list[str]]:
    """Record the SQL statements the driver sends (on its own engine)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2].split()[0].upper())

    engine = _driver(conn).engine
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def _data(seen: list[str]) -> list[str]:
    """Drop transaction control and pings from a statement list."""
    return [s for s in seen if s not in ("BEGIN", "COMMIT", "ROLLBACK", "SET")]


# -- the batched data path -------------------------------------------------------------------


def test_claim_of_a_batch_is_one_transaction(connection: Connection, queue_name: str) -> None:
    """100 messages are claimed with one UPDATE ... RETURNING (or SELECT + UPDATE)."""
    _push(connection, queue_name, 100)
    with _statements(connection) as seen:
        got = _pull(connection, queue_name, 100)
    assert len(got) == 100
    assert _data(seen) in (["UPDATE"], ["SELECT", "UPDATE"])


def test_ack_of_a_batch_is_one_delete(connection: Connection, queue_name: str) -> None:
    """Acking 300 deliveries sends one DELETE, and the queue is then empty."""
    _push(connection, queue_name, 300)
    got = _pull(connection, queue_name, 300)
    with _statements(connection) as seen:
        connection.hook.pashq_ack(queue=queue_name, deliveries=got)
    assert _data(seen) == ["DELETE"]
    assert connection.stats(queue_name).in_flight == 0


def test_push_of_many_inserts_in_one_transaction(connection: Connection, queue_name: str) -> None:
    """dispatch_many of 1,200 messages: batched INSERTs, every message stored in order."""
    ids = _push(connection, queue_name, 1200)
    got = _pull(connection, queue_name, 500) + _pull(connection, queue_name, 500)
    got += _pull(connection, queue_name, 500)
    assert [d.id for d in got] == ids


def test_nack_keeps_the_attempt_count(connection: Connection, queue_name: str) -> None:
    """A nack does not count an attempt; the next claim does."""
    _push(connection, queue_name, 1)
    (first,) = _pull(connection, queue_name)
    connection.hook.pashq_nack(queue=queue_name, deliveries=[first], delay=0)
    (second,) = _pull(connection, queue_name)
    assert (first.attempts, second.attempts) == (1, 2)


def test_nack_by_a_worker_that_lost_its_lease_is_ignored(
    connection: Connection, queue_name: str
) -> None:
    """After the lease ran out and another worker claimed the row, the old nack is a no-op."""
    other = make_connection(dict(connection.options, type="database", lease=30.0))
    try:
        _push(connection, queue_name, 1)
        (stale,) = _pull(connection, queue_name)
        (current,) = wait_for(lambda: _pull(other, queue_name), timeout=10)
        connection.hook.pashq_nack(queue=queue_name, deliveries=[stale], delay=0)
        connection.hook.pashq_dead_letter(
            queue=queue_name, delivery=stale, reason="stale", traceback=None
        )
        assert _pull(connection, queue_name) == []
        assert connection.failed(queue_name) == []
        other.hook.pashq_ack(queue=queue_name, deliveries=[current])
    finally:
        other.close()


def test_dead_letter_moves_the_row_with_reason(connection: Connection, queue_name: str) -> None:
    """The row leaves the queue and is kept with reason, traceback and attempts."""
    (message_id,) = _push(connection, queue_name, 1)
    (delivery,) = _pull(connection, queue_name)
    connection.hook.pashq_dead_letter(
        queue=queue_name, delivery=delivery, reason="boom", traceback="Traceback: boom"
    )
    (dead,) = connection.failed(queue_name)
    assert (dead.id, dead.reason, dead.traceback, dead.attempts) == (
        message_id,
        "boom",
        "Traceback: boom",
        1,
    )
    assert dead.body == delivery.body
    stats = connection.stats(queue_name)
    assert (stats.ready, stats.delayed, stats.in_flight, stats.failed) == (0, 0, 0, 1)


def test_stats_tell_ready_delayed_and_in_flight(connection: Connection, queue_name: str) -> None:
    """Counts per state, from the columns alone."""
    _push(connection, queue_name, 3)
    connection.hook.pashq_push(
        queue=queue_name,
        messages=[OutgoingMessage(uuid.uuid4().hex, "t", b"{}", delay=60)],
        options={},
    )
    _pull(connection, queue_name, 1)
    stats = connection.stats(queue_name)
    assert (stats.ready, stats.delayed, stats.in_flight, stats.failed) == (2, 1, 1, 0)


def test_extend_keeps_the_row_leased(connection: Connection, queue_name: str) -> None:
    """An extension moves the lease end: the row is not claimable when the old one passes."""
    _push(connection, queue_name, 1)
    (delivery,) = _pull(connection, queue_name)
    connection.hook.pashq_extend(queue=queue_name, deliveries=[delivery], seconds=30)
    time.sleep(2.2)  # the configured lease (2 s) has passed: only the extension holds it
    assert _pull(connection, queue_name) == []
    assert connection.stats(queue_name).in_flight == 1


# -- transactional dispatch (outbox) ---------------------------------------------------------


def test_outbox_message_exists_only_if_the_caller_commits(
    connection: Connection, backend: str, queue_name: str
) -> None:
    """dispatch(transaction=conn) writes in the caller's transaction and never commits."""
    engine = sa.create_engine(connection.options["url"])
    try:
        with engine.connect() as own:
            own.begin()
            _push(connection, queue_name, 1, transaction=own)
            own.rollback()
        assert _pull(connection, queue_name) == []
        with engine.begin() as own:
            (kept,) = _push(connection, queue_name, 1, transaction=own)
            if backend != "sqlite":  # SQLite: the caller's open write blocks other writers
                assert _pull(connection, queue_name, timeout=0) == []  # not committed yet
        assert [d.id for d in _pull(connection, queue_name)] == [kept]
    finally:
        engine.dispose()


def test_outbox_accepts_an_orm_session(connection: Connection, queue_name: str) -> None:
    """A Session works too: its connection's transaction carries the message."""
    engine = sa.create_engine(connection.options["url"])
    try:
        with Session(engine) as session:
            _push(connection, queue_name, 1, transaction=session)
            session.rollback()
        assert _pull(connection, queue_name) == []
        with Session(engine) as session:
            _push(connection, queue_name, 2, transaction=session)
            session.commit()
        assert len(_pull(connection, queue_name)) == 2
    finally:
        engine.dispose()


def test_unknown_dispatch_option_is_rejected(connection: Connection, queue_name: str) -> None:
    """A typo in a dispatch option is an error, not silently ignored."""
    with pytest.raises(TypeError, match="transacton"):
        _push(connection, queue_name, 1, transacton=None)


# -- missing tables --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_missing_table_is_a_clear_error_at_dispatch_and_worker_start(
    backends: Backends, backend: str, queue_name: str
) -> None:
    """create_tables = false and no tables: QueueNotFoundError saying what to run."""
    prefix = f"missing{uuid.uuid4().hex[:6]}_"
    conn = make_connection(backends.table(backend, prefix=prefix, create_tables=False))
    try:
        with pytest.raises(QueueNotFoundError, match="run `pashq database create`") as info:
            _push(conn, queue_name, 1)
        assert f"{prefix}messages" in str(info.value) and queue_name in str(info.value)
        with pytest.raises(QueueNotFoundError, match="pashq database create"):
            conn.hook.pashq_declare(queue=queue_name)
    finally:
        conn.close()


def test_sqlite_creates_its_tables_by_itself(tmp_path: Any, queue_name: str) -> None:
    """The default on SQLite: a fresh file gets its tables on first use."""
    conn = make_connection({"type": "database", "url": f"sqlite:///{tmp_path}/fresh.sqlite3"})
    try:
        (message_id,) = _push(conn, queue_name, 1)
        assert [d.id for d in _pull(conn, queue_name)] == [message_id]
    finally:
        conn.close()


# -- idle workers and wake-ups ---------------------------------------------------------------


def test_idle_puller_backs_off_instead_of_hammering(
    backends: Backends, backend: str, queue_name: str
) -> None:
    """An idle pull with poll_interval = 0.5 sends a handful of claims per second, not
    hundreds."""
    conn = backends.connect(backend, poll_interval=0.5, listen=False)
    try:
        _pull(conn, queue_name)  # tables checked, engine warm
        with _statements(conn) as seen:
            started = time.monotonic()
            while time.monotonic() - started < 3.0:
                assert _pull(conn, queue_name, timeout=1.0) == []
        claims = [s for s in _data(seen) if s in ("UPDATE", "SELECT")]
        assert len(claims) <= 14, claims
    finally:
        conn.close()


@pytest.mark.postgresql
def test_notify_wakes_an_idle_puller_at_once(backends: Backends, queue_name: str) -> None:
    """On PostgreSQL a push from another process's connection ends the idle wait at once,
    long before poll_interval (10 s)."""
    consumer = backends.connect("postgresql", poll_interval=10.0)
    producer = backends.connect("postgresql")
    try:
        _pull(consumer, queue_name)
        for _ in range(3):  # grow the back-off to its 10 s cap
            _pull(consumer, queue_name, timeout=0.1)
        result: list[Delivery] = []
        thread = threading.Thread(
            target=lambda: result.extend(_pull(consumer, queue_name, timeout=15.0))
        )
        thread.start()
        time.sleep(0.5)  # let the puller start waiting (a late push would also be seen)
        pushed = time.monotonic()
        _push(producer, queue_name, 1)
        thread.join(timeout=15)
        latency = time.monotonic() - pushed
        assert len(result) == 1
        assert latency < 2.0, f"woke after {latency:.2f}s"
    finally:
        producer.close()
        consumer.close()


# -- options and secrets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"table_prefix": "bad-prefix"}, "table_prefix"),
        ({"lease": 0}, "lease"),
        ({"batch_size": 0}, "batch_size"),
        ({"leese": 3}, "leese"),
        ({"url": "sqlite://"}, "in-memory"),
        ({"url": "not a url"}, "url"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_connection({"type": "database", **options})


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_password_never_appears_in_errors(backend: str) -> None:
    """An unreachable server: the error names the host and hides the password."""
    scheme = "postgresql+psycopg" if backend == "postgresql" else "mysql+pymysql"
    conn = make_connection(
        {
            "type": "database",
            "url": f"{scheme}://app:s3cr3t-pw@127.0.0.1:1/app",
            "engine_options": {"connect_args": {"connect_timeout": 2}},
        }
    )
    try:
        with pytest.raises(DriverError) as info:
            _push(conn, "q", 1)
        text = str(info.value)
        assert "s3cr3t-pw" not in text and "***" in text and "127.0.0.1" in text
        assert "s3cr3t-pw" not in repr(conn) and "s3cr3t-pw" not in repr(conn.driver)
    finally:
        conn.close()


@pytest.mark.mariadb
def test_message_over_max_allowed_packet_is_rejected_before_sending(
    backends: Backends, queue_name: str
) -> None:
    """MariaDB would drop the connection; the driver refuses the batch up front, naming the
    message and the server setting."""
    conn = backends.connect("mariadb")
    try:
        with _driver(conn).engine.connect() as raw:
            packet = raw.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one()
        big = OutgoingMessage("too-big", "t", b"x" * (int(packet) + 1))
        with pytest.raises(MessageTooLargeError, match=r"too-big.*max_allowed_packet"):
            conn.hook.pashq_push(queue=queue_name, messages=[big], options={})
        assert conn.stats(queue_name).ready == 0
        _push(conn, queue_name, 1)  # the connection is still fine
        assert conn.stats(queue_name).ready == 1
    finally:
        conn.close()

"""Settling on the real backends: fenced on the claim, rows locked in id order, text the
database refuses, the server's clock, timestamps."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from pashq.connection import Connection
from pashq.delivery import Delivery, OutgoingMessage
from pashq.testing import make_connection, wait_for
from pashq_database import DatabaseDriver, Schema

from .conftest import SERVER_BACKENDS, Backends


def _push(conn: Connection, queue: str, count: int = 1, delay: float = 0.0) -> list[str]:
    messages = [
        OutgoingMessage(uuid.uuid4().hex, "t", f'{{"n": {i}}}'.encode(), delay=delay)
        for i in range(count)
    ]
    ids: list[str] = conn.hook.pashq_push(queue=queue, messages=messages, options={})
    return ids


def _pull(conn: Connection, queue: str, n: int = 500) -> list[Delivery]:
    got: list[Delivery] = conn.hook.pashq_pull(queue=queue, max_messages=n, timeout=0.0)
    return got


def _driver(conn: Connection) -> DatabaseDriver:
    assert isinstance(conn.driver, DatabaseDriver)
    return conn.driver


def _row(conn: Connection, row_id: int) -> tuple[Any, ...] | None:
    """The stored row (or None), read on its own connection."""
    driver = _driver(conn)
    m = driver.schema.messages
    with driver.engine.connect() as raw:
        found = raw.execute(sa.select(m).where(m.c.id == row_id)).first()
    return None if found is None else tuple(found)


def _settle(conn: Connection, queue: str, how: str, deliveries: list[Delivery]) -> None:
    hook = conn.hook
    if how == "ack":
        hook.pashq_ack(queue=queue, deliveries=deliveries)
    elif how == "nack":
        hook.pashq_nack(queue=queue, deliveries=deliveries, delay=0)
    elif how == "extend":
        hook.pashq_extend(queue=queue, deliveries=deliveries, seconds=60)
    else:
        for d in deliveries:
            hook.pashq_dead_letter(queue=queue, delivery=d, reason="stale", traceback=None)


@pytest.fixture
def two(backends: Backends, backend: str) -> Iterator[tuple[Connection, Connection]]:
    """Worker A with a 1 s lease and worker B with a 30 s lease, on one table."""
    a = backends.connect(backend, lease=1.0)
    b = backends.connect(backend, lease=30.0)
    yield a, b
    a.close()
    b.close()


# -- fencing ---------------------------------------------------------------------------------


def test_late_ack_after_another_claim_leaves_the_message_to_its_holder(
    two: tuple[Connection, Connection], queue_name: str
) -> None:
    """A's lease ran out and B claimed the row: A's late ack deletes nothing."""
    a, b = two
    _push(a, queue_name)
    (stale,) = _pull(a, queue_name)
    (current,) = wait_for(lambda: _pull(b, queue_name), timeout=20, what="the lease to end")
    a.hook.pashq_ack(queue=queue_name, deliveries=[stale])
    assert b.stats(queue_name).in_flight == 1
    b.hook.pashq_ack(queue=queue_name, deliveries=[current])
    assert b.stats(queue_name).in_flight == 0


def _old_sqlite_tables(backends: Backends, prefix: str) -> None:
    """Create the tables as earlier versions did: no AUTOINCREMENT, so row ids are reused."""
    engine = sa.create_engine(backends.url("sqlite"))
    try:
        with engine.begin() as conn:
            for ddl in Schema.build(prefix).ddl(engine.dialect):
                conn.exec_driver_sql(ddl.replace(" AUTOINCREMENT", ""))
    finally:
        engine.dispose()


def test_new_sqlite_tables_never_reuse_a_row_id(backends: Backends, queue_name: str) -> None:
    """Tables created now use AUTOINCREMENT: the next row after the deleted top row gets a
    new id."""
    conn = make_connection(backends.table("sqlite", prefix=f"n{uuid.uuid4().hex[:8]}_"))
    try:
        _push(conn, queue_name)
        (first,) = _pull(conn, queue_name)
        conn.hook.pashq_ack(queue=queue_name, deliveries=[first])
        _push(conn, queue_name)
        (second,) = _pull(conn, queue_name)
        assert second.receipt[0] > first.receipt[0]
    finally:
        conn.close()


@pytest.mark.parametrize("how", ["ack", "nack", "extend", "dead_letter"])
def test_stale_settle_cannot_touch_a_new_message_in_a_reused_sqlite_row(
    backends: Backends, queue_name: str, how: str
) -> None:
    """On a table without AUTOINCREMENT (created by an earlier version) SQLite gives a
    deleted top row's id to the next insert: a stale settle of the old message (same row
    id, same attempt count) leaves the new one alone."""
    prefix = f"r{uuid.uuid4().hex[:8]}_"  # an empty table: this row is the top row
    _old_sqlite_tables(backends, prefix)
    a = make_connection(backends.table("sqlite", prefix=prefix, lease=1.0))
    b = make_connection(backends.table("sqlite", prefix=prefix, lease=30.0))
    try:
        _push(a, queue_name)
        (stale,) = _pull(a, queue_name)
        (again,) = wait_for(lambda: _pull(b, queue_name), timeout=20, what="the lease to end")
        b.hook.pashq_ack(queue=queue_name, deliveries=[again])
        _push(b, queue_name)
        (fresh,) = _pull(b, queue_name)
        assert (fresh.receipt[0], fresh.attempts) == (stale.receipt[0], stale.attempts)
        before = _row(b, fresh.receipt[0])
        _settle(a, queue_name, how, [stale])
        assert _row(b, fresh.receipt[0]) == before
        assert b.failed(queue_name) == []
    finally:
        a.close()
        b.close()


def test_settle_uses_the_stored_id_when_the_delivery_id_was_replaced(
    connection: Connection, queue_name: str
) -> None:
    """The worker sets delivery.id to the envelope's id; the fence is the stored column."""
    _push(connection, queue_name, 2)
    first, second = _pull(connection, queue_name)
    first.id = second.id = "an-id-the-envelope-says"
    connection.hook.pashq_ack(queue=queue_name, deliveries=[first])
    connection.hook.pashq_dead_letter(
        queue=queue_name, delivery=second, reason="boom", traceback=None
    )
    assert connection.stats(queue_name).in_flight == 0
    assert [d.id for d in connection.failed(queue_name)] == ["an-id-the-envelope-says"]


# -- lock order ------------------------------------------------------------------------------


def _lock_waits(engine: sa.Engine, backend: str, table: str) -> int:
    """How many other sessions wait for a row lock on ``table``."""
    if backend == "postgresql":
        sql = (
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND pid <> pg_backend_pid() AND query LIKE :pattern"
        )
    else:
        sql = (
            "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = "
            "'LOCK WAIT' AND trx_mysql_thread_id <> CONNECTION_ID() AND trx_query LIKE :pattern"
        )
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql), {"pattern": f"%{table}%"}).scalar_one())


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
@pytest.mark.parametrize("how", ["extend", "nack"])
def test_multi_row_settle_locks_rows_in_id_order(
    backends: Backends, backend: str, queue_name: str, how: str
) -> None:
    """Deliveries in pull order (a retried low id after a newer one) are locked low id
    first, the order an ack uses: a transaction holding the low row and then taking the
    high one waits instead of deadlocking with the settle."""
    conn = backends.connect(backend, lease=30.0)
    driver = _driver(conn)
    table = driver.schema.messages
    engine = sa.create_engine(backends.url(backend))
    errors: list[BaseException] = []
    try:
        _push(conn, queue_name, 2)
        low, high = sorted(_pull(conn, queue_name), key=lambda d: d.receipt[0])

        def settle() -> None:
            try:
                _settle(conn, queue_name, how, [high, low])
            except BaseException as exc:  # reported by the assertion below
                errors.append(exc)

        def lock(raw: sa.Connection, row_id: int) -> None:
            raw.execute(sa.select(table.c.id).where(table.c.id == row_id).with_for_update())

        with engine.connect() as raw, raw.begin():
            if backend == "postgresql":
                raw.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
            else:
                raw.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 30")
            lock(raw, low.receipt[0])
            worker = threading.Thread(target=settle)
            worker.start()
            wait_for(
                lambda: _lock_waits(engine, backend, table.name),
                timeout=30,
                what="the settle to wait for the locked row",
            )
            lock(raw, high.receipt[0])  # the settle holds nothing yet: no deadlock
        worker.join(60)
        assert not worker.is_alive()
        assert errors == []
        expect_ready = 2 if how == "nack" else 0
        assert conn.stats(queue_name).ready == expect_ready
    finally:
        engine.dispose()
        conn.close()


# -- text the database refuses ---------------------------------------------------------------

HOSTILE = "bad \x00 nul, \ud800 lone surrogate, \U0001f600 emoji"


def test_dead_letter_stores_text_the_database_would_refuse(
    connection: Connection, queue_name: str
) -> None:
    """NUL and lone surrogates in a reason or traceback are escaped, not a failed move
    (which would redeliver the message every lease for ever)."""
    (message_id,) = _push(connection, queue_name)
    (delivery,) = _pull(connection, queue_name)
    connection.hook.pashq_dead_letter(
        queue=queue_name, delivery=delivery, reason=HOSTILE, traceback="Traceback\n" + HOSTILE
    )
    (dead,) = connection.failed(queue_name)
    assert dead.id == message_id
    assert dead.reason == "bad \\x00 nul, \\ud800 lone surrogate, \U0001f600 emoji"
    assert dead.traceback is not None and dead.traceback.endswith(dead.reason)
    assert connection.stats(queue_name).in_flight == 0


def test_dead_letter_caps_a_huge_reason_and_keeps_the_end_of_the_traceback(
    connection: Connection, queue_name: str
) -> None:
    """Megabytes of repr in an exception do not fail the move either."""
    _push(connection, queue_name)
    (delivery,) = _pull(connection, queue_name)
    huge = "x" * 3_000_000
    connection.hook.pashq_dead_letter(
        queue=queue_name, delivery=delivery, reason=huge, traceback=huge + "\nValueError: end"
    )
    (dead,) = connection.failed(queue_name)
    assert len(dead.reason) <= 1000
    assert dead.traceback is not None and dead.traceback.endswith("ValueError: end")
    assert len(dead.traceback) <= 32_000


# -- the server's clock ----------------------------------------------------------------------


def _skewed(monkeypatch: pytest.MonkeyPatch, seconds: float) -> Callable[[], None]:
    """Make this process's clock (time.time) run ``seconds`` off; returns the undo."""
    real = time.time
    context = monkeypatch.context()
    patch = context.__enter__()
    patch.setattr(time, "time", lambda: real() + seconds)
    return lambda: context.__exit__(None, None, None)


def test_worker_with_a_fast_clock_cannot_take_a_live_lease(
    backends: Backends, backend: str, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose clock is 60 s ahead finds nothing while another holds a 30 s lease."""
    holder = backends.connect(backend, lease=30.0)
    thief = backends.connect(backend, lease=30.0)
    try:
        _push(holder, queue_name, 8)
        assert len(_pull(holder, queue_name)) == 8
        undo = _skewed(monkeypatch, 60)
        try:
            stolen = _pull(thief, queue_name)
        finally:
            undo()
        assert stolen == []
        assert holder.stats(queue_name).in_flight == 8
    finally:
        holder.close()
        thief.close()


def test_producer_with_a_slow_clock_still_delays(
    connection: Connection, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 30 s delay from a host 60 s behind is 30 s on the server, not already due."""
    undo = _skewed(monkeypatch, -60)
    try:
        _push(connection, queue_name, delay=30)
    finally:
        undo()
    assert _pull(connection, queue_name) == []
    assert connection.stats(queue_name).delayed == 1


# -- timestamps ------------------------------------------------------------------------------


def test_failed_at_is_an_aware_utc_datetime(connection: Connection, queue_name: str) -> None:
    """failed_at comes back timezone-aware, in UTC, close to now."""
    _push(connection, queue_name)
    (delivery,) = _pull(connection, queue_name)
    connection.hook.pashq_dead_letter(
        queue=queue_name, delivery=delivery, reason="boom", traceback=None
    )
    (dead,) = connection.failed(queue_name)
    assert dead.failed_at is not None
    assert dead.failed_at.utcoffset() == timedelta(0)
    assert abs(dead.failed_at - datetime.now(UTC)) < timedelta(minutes=5)


def test_dead_letter_with_an_unstorable_delivery_id_keeps_the_stored_id(
    connection: Connection, queue_name: str
) -> None:
    """A delivery id the column cannot hold (too long once escaped) falls back to the row's
    message id instead of failing the move."""
    (message_id,) = _push(connection, queue_name)
    (delivery,) = _pull(connection, queue_name)
    delivery.id = "\ud800" * 20  # 120 characters once escaped
    connection.hook.pashq_dead_letter(
        queue=queue_name, delivery=delivery, reason="boom", traceback=None
    )
    assert [d.id for d in connection.failed(queue_name)] == [message_id]


@pytest.mark.mariadb
def test_dead_letter_into_an_old_utf8mb3_table_stores_text_it_cannot_hold(
    backends: Backends, queue_name: str
) -> None:
    """A table in a 3-byte charset (created by hand or by an older setup) refuses an emoji:
    the move falls back to ASCII escapes instead of failing for ever."""
    prefix = f"c{uuid.uuid4().hex[:8]}_"
    table = backends.table("mariadb", prefix=prefix)
    engine = sa.create_engine(backends.url("mariadb"))
    try:
        with engine.begin() as raw:
            for ddl in Schema.build(prefix).ddl(engine.dialect):
                ddl = ddl.replace("CHARACTER SET utf8mb4 COLLATE utf8mb4_bin", "")
                ddl = ddl.replace("CHARSET=utf8mb4", "CHARSET=utf8mb3")
                raw.exec_driver_sql(ddl)
    finally:
        engine.dispose()
    conn = make_connection(table)
    try:
        _push(conn, queue_name)
        (delivery,) = _pull(conn, queue_name)
        conn.hook.pashq_dead_letter(
            queue=queue_name, delivery=delivery, reason="smile \U0001f600", traceback="tb é"
        )
        (dead,) = conn.failed(queue_name)
        assert (dead.reason, dead.traceback) == ("smile \\U0001f600", "tb \\xe9")
        assert conn.stats(queue_name).in_flight == 0
    finally:
        conn.close()

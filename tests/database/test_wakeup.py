"""How idle pullers wake up: NOTIFY on every PostgreSQL dispatch, a change check elsewhere.

The pullers here have a 10 s ``poll_interval`` and were idle for 5 s, so a back-off alone
would pause for seconds: a pull that returns the message within a second was woken by the
mechanism under test.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from pashq.connection import Connection
from pashq.delivery import Delivery, OutgoingMessage
from pashq_database import DatabaseDriver

from .conftest import POSTGRESQL_URL, Backends

#: The change check per backend: SQLite's data_version, MAX(id) on the servers (PostgreSQL
#: with LISTEN off).
CHECKED = [
    pytest.param("sqlite", {}, id="sqlite"),
    pytest.param("mariadb", {}, id="mariadb", marks=pytest.mark.mariadb),
    pytest.param(
        "postgresql", {"listen": False}, id="postgresql-no-listen", marks=pytest.mark.postgresql
    ),
]


def _push(conn: Connection, queue: str, count: int = 1) -> None:
    messages = [OutgoingMessage(uuid.uuid4().hex, "t", b"{}") for _ in range(count)]
    conn.hook.pashq_push(queue=queue, messages=messages, options={})


def _pull(conn: Connection, queue: str, timeout: float = 0.0) -> list[Delivery]:
    got: list[Delivery] = conn.hook.pashq_pull(queue=queue, max_messages=10, timeout=timeout)
    return got


def _driver(conn: Connection) -> DatabaseDriver:
    assert isinstance(conn.driver, DatabaseDriver)
    return conn.driver


@pytest.mark.parametrize(("backend", "options"), CHECKED)
def test_idle_puller_wakes_on_a_commit_by_another_connection(
    backends: Backends, backend: str, options: dict[str, object]
) -> None:
    """A push through another driver (as from another process: no in-process poke) ends
    the idle wait long before ``poll_interval``."""
    queue = f"q-{uuid.uuid4().hex[:10]}"
    consumer = backends.connect(backend, poll_interval=10.0, **options)
    producer = backends.connect(backend, **options)
    try:
        _pull(consumer, queue)  # tables checked, engine warm
        # Idle for 5 s: a back-off alone would now pause for seconds (20 ms doubling).
        assert _pull(consumer, queue, timeout=5.0) == []
        result: list[Delivery] = []
        thread = threading.Thread(target=lambda: result.extend(_pull(consumer, queue, 15.0)))
        thread.start()
        time.sleep(0.5)  # let the puller start waiting (a push before it would be seen too)
        pushed = time.monotonic()
        _push(producer, queue)
        thread.join(timeout=15)
        latency = time.monotonic() - pushed
        assert len(result) == 1
        assert latency < 1.0, f"woke after {latency:.2f}s"
    finally:
        producer.close()
        consumer.close()


@pytest.mark.parametrize(("backend", "options"), CHECKED)
def test_change_mark_moves_on_commits_only(
    backends: Backends, backend: str, options: dict[str, object]
) -> None:
    """The mark changes when a message is committed; an empty claim leaves it alone, so
    idle workers do not wake each other."""
    queue = f"q-{uuid.uuid4().hex[:10]}"
    watcher = backends.connect(backend, **options)
    other = backends.connect(backend, **options)
    try:
        _pull(other, queue)
        watch = _driver(watcher)._watch
        assert watch is not None
        mark = watch.mark()
        assert mark is not None
        assert _pull(other, queue) == []  # an empty claim by another worker
        assert not watch.changed(mark)
        _push(other, queue)
        assert watch.changed(mark)
    finally:
        other.close()
        watcher.close()


@pytest.mark.postgresql
def test_every_dispatch_notifies_at_commit(backends: Backends) -> None:
    """Two dispatches right after each other send two notifications (before issue 11 one
    producer sent at most one per queue every 50 ms)."""
    queue = f"q-{uuid.uuid4().hex[:10]}"
    producer = backends.connect("postgresql")
    url = POSTGRESQL_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        _push(producer, queue)  # tables exist before LISTEN
        with psycopg.connect(url, autocommit=True) as listener:
            listener.execute(f'LISTEN "{_driver(producer).channel}"')
            _push(producer, queue)
            _push(producer, queue)
            got = [n.payload for n in listener.notifies(timeout=10.0, stop_after=2)]
        assert got == [queue, queue]
    finally:
        producer.close()


@pytest.mark.postgresql
def test_claims_do_not_wait_for_the_wal_flush(backends: Backends) -> None:
    """On PostgreSQL the claim's transaction commits asynchronously (a lost claim is a lease
    that ended); pushes and acks keep the server's durability setting."""
    queue = f"q-{uuid.uuid4().hex[:10]}"
    conn = backends.connect("postgresql")
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(" ".join(args[2].split()[:3]).upper())

    engine = _driver(conn).engine
    try:
        _push(conn, queue)
        sa.event.listen(engine, "before_cursor_execute", record)
        _push(conn, queue)
        pushes = list(seen)
        deliveries = _pull(conn, queue)
        conn.hook.pashq_ack(queue=queue, deliveries=deliveries)
        sa.event.remove(engine, "before_cursor_execute", record)
        assert len(deliveries) == 2
        assert "SET LOCAL SYNCHRONOUS_COMMIT" not in pushes
        assert seen.count("SET LOCAL SYNCHRONOUS_COMMIT") == 1  # the claim's, not the ack's
    finally:
        conn.close()

"""A server restart under dispatch, simulated with a TCP proxy of the test's own (the shared
servers are never restarted): a push retries on a fresh connection, never duplicates."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from tcp_proxy import TcpProxy as Proxy

from pashq.connection import Connection
from pashq.delivery import OutgoingMessage
from pashq.errors import DriverError
from pashq.testing import drain, make_connection

from .conftest import SERVER_BACKENDS, Backends


@pytest.fixture(params=SERVER_BACKENDS)
def proxied(
    backends: Backends, request: pytest.FixtureRequest
) -> Iterator[tuple[Connection, Proxy]]:
    """A connection whose URL goes through a :class:`Proxy` to the real server."""
    backend: str = request.param
    url = sa.make_url(backends.url(backend))
    default_port = 5432 if backend == "postgresql" else 3306
    proxy = Proxy((url.host or "127.0.0.1", url.port or default_port))
    table = backends.table(backend)
    table["url"] = url.set(port=proxy.port).render_as_string(hide_password=False)
    table["listen"] = False
    conn = make_connection(table)
    yield conn, proxy
    conn.close()
    proxy.close()


def _messages(count: int) -> list[OutgoingMessage]:
    return [OutgoingMessage(uuid.uuid4().hex, "t", f'{{"n": {i}}}'.encode()) for i in range(count)]


def _push(conn: Connection, queue: str, messages: list[OutgoingMessage]) -> list[str]:
    ids: list[str] = conn.hook.pashq_push(queue=queue, messages=messages, options={})
    return ids


def test_push_during_a_two_second_restart_waits_and_stores_once(
    proxied: tuple[Connection, Proxy], queue_name: str
) -> None:
    """The pooled connection dies and the server refuses connections for 2 s: the push
    retries on a fresh connection once the server is back; every message is stored once."""
    conn, proxy = proxied
    _push(conn, queue_name, _messages(1))  # a pooled connection exists
    proxy.cut(down_for=2.0)
    batch = _messages(300)
    assert _push(conn, queue_name, batch) == [m.id for m in batch]
    got = drain(conn, queue_name, 301, timeout=60)
    assert len({d.id for d in got}) == len(got) == 301


def test_connection_lost_at_commit_is_an_error_saying_the_outcome_is_unknown(
    proxied: tuple[Connection, Proxy], queue_name: str
) -> None:
    """After COMMIT was sent nothing is retried (it could duplicate); the error names the
    messages and says they may or may not be stored."""
    conn, proxy = proxied
    _push(conn, queue_name, _messages(1))  # the tables are checked, a connection pooled
    engine = conn.driver.engine  # type: ignore[attr-defined]

    def cut_before_commit(*args: Any) -> None:
        proxy.cut(down_for=0.5)

    sa.event.listen(engine, "commit", cut_before_commit)
    try:
        batch = _messages(3)
        with pytest.raises(DriverError, match=r"during COMMIT.*may or may not be stored") as got:
            _push(conn, queue_name, batch)
        assert batch[0].id in str(got.value)
    finally:
        sa.event.remove(engine, "commit", cut_before_commit)
    _push(conn, queue_name, _messages(1))  # and the connection recovers
    assert conn.stats(queue_name).ready in (2, 5)  # the cut COMMIT: stored or not, whole


def test_ack_during_a_two_second_restart_waits_and_deletes(
    proxied: tuple[Connection, Proxy], queue_name: str
) -> None:
    """An ack is fenced and idempotent: it waits for the server instead of failing, so the
    message is not processed again after its lease."""
    conn, proxy = proxied
    _push(conn, queue_name, _messages(2))
    got = conn.hook.pashq_pull(queue=queue_name, max_messages=2, timeout=0)
    proxy.cut(down_for=2.0)
    conn.hook.pashq_ack(queue=queue_name, deliveries=got)
    stats = conn.stats(queue_name)
    assert (stats.ready, stats.in_flight) == (0, 0)

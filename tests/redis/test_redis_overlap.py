"""Where the Redis driver overlaps its round trips with the worker's own work: a publish
streamed batch by batch, and a claim read ahead in the background after a full one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pashq.connection import Connection
from pashq.delivery import Delivery, OutgoingMessage
from pashq.errors import PartialPushError
from pashq.testing import drain, make_connection, wait_for
from pashq_redis import RedisDriver

#: A pull this large that comes back full starts a read-ahead claim.
FULL = 60


def _message(n: int = 0, delay: float = 0.0, priority: int = 0) -> OutgoingMessage:
    return OutgoingMessage(
        uuid.uuid4().hex, "t", f'{{"n": {n}}}'.encode(), delay, priority=priority
    )


def _driver(conn: Connection) -> RedisDriver:
    driver = conn.driver
    assert isinstance(driver, RedisDriver)
    return driver


def _pull(conn: Connection, queue: str, n: int, timeout: float = 5.0) -> list[Delivery]:
    got: list[Delivery] = conn.hook.pashq_pull(queue=queue, max_messages=n, timeout=timeout)
    return got


def _push(conn: Connection, queue: str, count: int) -> list[str]:
    messages = [_message(n) for n in range(count)]
    ids: list[str] = conn.hook.pashq_push(queue=queue, messages=messages, options={})
    return ids


def _counts(conn: Connection, queue: str) -> tuple[int, int]:
    stats = conn.stats(queue)
    return stats.ready, stats.in_flight


@pytest.fixture
def roomy(redis_table: dict[str, Any], queue_name: str) -> Any:
    """A connection with a long lease (a read-ahead claim may wait 7.5 s for its pull)."""
    conn = make_connection(dict(redis_table, lease=30.0))
    yield conn
    cleaner = make_connection(redis_table)
    cleaner.driver.delete_queue(queue_name)  # type: ignore[attr-defined]
    cleaner.close()
    conn.close()


# -- streamed publish -------------------------------------------------------------------------


def test_streamed_push_reports_exactly_the_batch_the_server_refused(
    redis_table: dict[str, Any], queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the server refuses the second of three batches sent in one stream, the first
    and the third are stored and reported stored, the second reported not stored."""
    conn = make_connection(dict(redis_table, batch_size=10))
    driver = _driver(conn)
    build = driver._push_command
    calls: list[int] = []

    def second_is_refused(queue: str, batch: Any) -> tuple[Any, ...]:
        calls.append(1)
        if len(calls) == 2:  # a script that fails before it writes anything
            return ("EVAL", "return redis.error_reply('refused')", 0)
        return build(queue, batch)

    monkeypatch.setattr(driver, "_push_command", second_is_refused)
    messages = [_message(n) for n in range(30)]
    try:
        with pytest.raises(PartialPushError) as caught:
            conn.hook.pashq_push(queue=queue_name, messages=messages, options={})
        ids = [m.id for m in messages]
        assert caught.value.stored == ids[:10] + ids[20:]
        assert caught.value.not_stored == ids[10:20]
        got = drain(conn, queue_name, 20)
        assert [d.id for d in got] == ids[:10] + ids[20:]
        assert _counts(conn, queue_name) == (0, 0)
    finally:
        driver.delete_queue(queue_name)
        conn.close()


def test_streamed_push_of_many_batches_keeps_push_order(
    redis_table: dict[str, Any], queue_name: str
) -> None:
    """Forty batches written back to back, replies read at the end: all stored, in order."""
    conn = make_connection(dict(redis_table, batch_size=5))
    try:
        ids = _push(conn, queue_name, 200)
        got = drain(conn, queue_name, 200)
        assert [d.id for d in got] == ids
    finally:
        _driver(conn).delete_queue(queue_name)
        conn.close()


# -- read-ahead -------------------------------------------------------------------------------


def test_full_claim_reads_the_next_one_ahead(roomy: Connection, queue_name: str) -> None:
    """After a full claim the next one is made in the background; the next pull serves it,
    in push order, as first attempts, with the lease that is left of it."""
    ids = _push(roomy, queue_name, 3 * FULL)
    first = _pull(roomy, queue_name, FULL)
    assert [d.id for d in first] == ids[:FULL]
    wait_for(lambda: _counts(roomy, queue_name) == (FULL, 2 * FULL), what="the read-ahead")
    second = _pull(roomy, queue_name, FULL)
    assert [d.id for d in second] == ids[FULL : 2 * FULL]
    assert {d.attempts for d in second} == {1}
    lease = _driver(roomy).options.lease
    assert all(0.75 * lease <= (d.lease or 0.0) <= lease for d in second)
    roomy.hook.pashq_ack(queue=queue_name, deliveries=first + second)


def test_smaller_pull_takes_part_of_the_read_ahead(roomy: Connection, queue_name: str) -> None:
    """A pull asking less than the read-ahead holds gets the oldest; the next gets the rest."""
    ids = _push(roomy, queue_name, 2 * FULL)
    first = _pull(roomy, queue_name, FULL)
    part = _pull(roomy, queue_name, 10)
    rest = _pull(roomy, queue_name, FULL)
    assert [d.id for d in first + part + rest] == ids
    roomy.hook.pashq_ack(queue=queue_name, deliveries=first + part + rest)


def test_read_ahead_is_given_back_uncounted_on_close(
    redis_table: dict[str, Any], roomy: Connection, queue_name: str
) -> None:
    """Closing the connection hands back the read-ahead deliveries nobody took, without
    counting the attempt: another worker gets them at once, as first attempts."""
    ids = _push(roomy, queue_name, 2 * FULL)
    first = _pull(roomy, queue_name, FULL)
    wait_for(lambda: _counts(roomy, queue_name) == (0, 2 * FULL), what="the read-ahead")
    roomy.hook.pashq_ack(queue=queue_name, deliveries=first)
    roomy.close()
    other = make_connection(dict(redis_table, lease=30.0))
    try:
        assert _counts(other, queue_name) == (FULL, 0)
        again = _pull(other, queue_name, 2 * FULL)
        assert [d.id for d in again] == ids[FULL:]
        assert {d.attempts for d in again} == {1}
        other.hook.pashq_ack(queue=queue_name, deliveries=again)
    finally:
        other.close()


def test_read_ahead_older_than_a_quarter_lease_is_given_back(
    redis_table: dict[str, Any], queue_name: str
) -> None:
    """A read-ahead claim nobody asked for within a quarter of the lease goes back to the
    queue uncounted (the worker extends only leases it knows), and a later pull claims it
    afresh with a whole lease."""
    conn = make_connection(dict(redis_table, lease=2.0))
    try:
        ids = _push(conn, queue_name, 2 * FULL)
        first = _pull(conn, queue_name, FULL)
        conn.hook.pashq_ack(queue=queue_name, deliveries=first)
        wait_for(lambda: _counts(conn, queue_name) == (0, FULL), what="the read-ahead")
        wait_for(lambda: _counts(conn, queue_name) == (FULL, 0), what="the give-back")
        again = _pull(conn, queue_name, 2 * FULL)
        assert [d.id for d in again] == ids[FULL:]
        assert {d.attempts for d in again} == {1}
        assert {d.lease for d in again} == {2.0}
        conn.hook.pashq_ack(queue=queue_name, deliveries=again)
    finally:
        _driver(conn).delete_queue(queue_name)
        conn.close()


def test_small_or_short_claims_read_nothing_ahead(roomy: Connection, queue_name: str) -> None:
    """Below the read-ahead size, or when a claim came back short, nothing more is claimed."""
    _push(roomy, queue_name, FULL + 30)
    small = _pull(roomy, queue_name, 10)
    assert _counts(roomy, queue_name) == (FULL + 20, 10)
    short = _pull(roomy, queue_name, 2 * FULL)
    assert len(short) == FULL + 20
    assert _counts(roomy, queue_name) == (0, FULL + 30)
    assert _driver(roomy)._ahead == {}
    roomy.hook.pashq_ack(queue=queue_name, deliveries=small + short)


def test_forked_child_does_not_serve_the_parents_read_ahead(
    roomy: Connection, queue_name: str
) -> None:
    """A child forked while the parent holds a read-ahead claim claims from Redis itself:
    the parent's read-ahead stays the parent's."""
    ids = _push(roomy, queue_name, 3 * FULL)
    first = _pull(roomy, queue_name, FULL)
    wait_for(lambda: _counts(roomy, queue_name) == (FULL, 2 * FULL), what="the read-ahead")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            got = _pull(roomy, queue_name, FULL, timeout=0.0)
            os.write(write, ",".join(d.id for d in got).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child_ids = pipe.read().decode().split(",")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_ids == ids[2 * FULL :]
    mine = _pull(roomy, queue_name, FULL)
    assert [d.id for d in mine] == ids[FULL : 2 * FULL]
    roomy.hook.pashq_ack(queue=queue_name, deliveries=first + mine)


def test_read_ahead_deliveries_are_extended_like_any_other(
    roomy: Connection, queue_name: str
) -> None:
    """The heartbeat's extension of deliveries served from a read-ahead claim moves their
    server-side lease deadlines (their receipts hold the claim they were made with)."""
    _push(roomy, queue_name, 2 * FULL)
    first = _pull(roomy, queue_name, FULL)
    second = _pull(roomy, queue_name, FULL)
    driver = _driver(roomy)
    client = driver.redis()
    leased = driver.keys(queue_name).key("leased")
    before = [client.zscore(leased, d.receipt.number) for d in second]
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    roomy.hook.pashq_extend(queue=queue_name, deliveries=second, seconds=120.0)
    after = [client.zscore(leased, d.receipt.number) for d in second]
    assert all(
        b is not None and a is not None and a > b for a, b in zip(after, before, strict=True)
    )
    assert all(a is not None and a >= now_ms + 119_000 for a in after)
    roomy.hook.pashq_ack(queue=queue_name, deliveries=first + second)
    assert _counts(roomy, queue_name) == (0, 0)


# -- pashq_push_stream ------------------------------------------------------------------------


def _stream(conn: Connection, queue: str, batches: Iterator[list[OutgoingMessage]]) -> list[str]:
    ids: list[str] = conn.hook.pashq_push_stream(queue=queue, batches=batches, options={})
    return ids


def test_push_stream_stores_every_batch_in_order(connection: Connection, queue_name: str) -> None:
    """Batches handed over one by one are all stored, in order, and their ids returned."""
    batches = [[_message(n) for n in range(k * 7, k * 7 + 7)] for k in range(3)]
    ids = _stream(connection, queue_name, iter(batches))
    assert ids == [m.id for batch in batches for m in batch]
    assert [d.id for d in drain(connection, queue_name, 21)] == ids


def test_push_stream_sends_a_batch_before_the_next_is_built(
    connection: Connection, queue_name: str
) -> None:
    """The server holds batch k before the iterator is asked for batch k + 1 (the core
    encodes the next batch while the server stores this one)."""
    other = _driver(connection).redis()
    fresh = _driver(connection).keys(queue_name).key("fresh")
    seen: list[int] = []

    def batches() -> Iterator[list[OutgoingMessage]]:
        for k in range(3):
            if k:
                wait_for(lambda k=k: other.llen(fresh) == 5 * k, what=f"batch {k} on the server")
                seen.append(k)
            yield [_message(n) for n in range(5)]

    assert len(_stream(connection, queue_name, batches())) == 15
    assert seen == [1, 2]
    drain(connection, queue_name, 15)


def test_push_stream_reports_the_batch_the_server_refused(
    connection: Connection, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch the server refuses mid-stream: PartialPushError naming exactly its ids; the
    batches around it are stored."""
    driver = _driver(connection)
    build = driver._push_command
    calls: list[int] = []

    def second_is_refused(queue: str, batch: Any) -> tuple[Any, ...]:
        calls.append(1)
        if len(calls) == 2:
            return ("EVAL", "return redis.error_reply('refused')", 0)
        return build(queue, batch)

    monkeypatch.setattr(driver, "_push_command", second_is_refused)
    batches = [[_message(n) for n in range(4)] for _ in range(3)]
    with pytest.raises(PartialPushError) as caught:
        _stream(connection, queue_name, iter(batches))
    ids = [[m.id for m in batch] for batch in batches]
    assert caught.value.stored == ids[0] + ids[2]
    assert caught.value.not_stored == ids[1]
    assert [d.id for d in drain(connection, queue_name, 8)] == ids[0] + ids[2]


def test_push_stream_ends_at_a_batch_holding_a_nul_id(
    connection: Connection, queue_name: str
) -> None:
    """A batch with an id holding NUL is not stored and nothing after it is taken; the
    batches before it are stored (PartialPushError)."""
    good = [_message(n) for n in range(3)]
    bad = [_message(10), OutgoingMessage("a\0b", "t", b"{}", 0.0)]
    taken: list[int] = []

    def batches() -> Iterator[list[OutgoingMessage]]:
        for k, batch in enumerate([good, bad, [_message(20)]]):
            taken.append(k)
            yield batch

    with pytest.raises(PartialPushError, match="NUL") as caught:
        _stream(connection, queue_name, batches())
    assert caught.value.stored == [m.id for m in good]
    assert caught.value.not_stored == [m.id for m in bad]
    assert taken == [0, 1]
    assert [d.id for d in drain(connection, queue_name, 3)] == [m.id for m in good]


def test_push_stream_of_mixed_batches_keeps_priorities_and_delays(
    connection: Connection, queue_name: str
) -> None:
    """Plain batches (a list push) and batches with priorities or delays (the script) in
    one stream: higher priorities first, dispatch order within one, delays held back."""
    low = [_message(n) for n in range(3)]
    high = [_message(10, priority=5), _message(11, priority=5)]
    later = [_message(20, delay=60.0)]
    _stream(connection, queue_name, iter([low, high, later]))
    got = drain(connection, queue_name, 5)
    assert [d.id for d in got] == [m.id for m in high + low]
    assert connection.stats(queue_name).delayed == 1


def test_push_stream_refuses_unknown_options(connection: Connection, queue_name: str) -> None:
    """Like pashq_push, the stream accepts no dispatch options."""
    with pytest.raises(TypeError, match="unknown dispatch option"):
        connection.hook.pashq_push_stream(
            queue=queue_name, batches=iter([[_message()]]), options={"group": "x"}
        )


def test_push_stream_splits_a_batch_larger_than_batch_size(
    redis_table: dict[str, Any], queue_name: str
) -> None:
    """A batch above batch_size is sent as several commands and stored whole, in order."""
    conn = make_connection(dict(redis_table, batch_size=4))
    try:
        messages = [_message(n) for n in range(10)]
        assert _stream(conn, queue_name, iter([messages])) == [m.id for m in messages]
        assert [d.id for d in drain(conn, queue_name, 10)] == [m.id for m in messages]
    finally:
        _driver(conn).delete_queue(queue_name)
        conn.close()


# -- streamed acks ----------------------------------------------------------------------------


def test_ack_is_read_before_the_queue_is_looked_at(connection: Connection, queue_name: str) -> None:
    """An ack's reply is read later, but stats and queue_empty right after it see it done."""
    _push(connection, queue_name, 5)
    got = _pull(connection, queue_name, 5)
    connection.hook.pashq_ack(queue=queue_name, deliveries=got)
    assert _driver(connection)._acks.sent  # on its way: the worker did not wait for it
    assert _counts(connection, queue_name) == (0, 0)
    assert not _driver(connection)._acks.sent


def test_streamed_ack_the_server_refused_is_made_again(
    private_redis: Any, key_prefix: str, queue_name: str
) -> None:
    """When the server answers a streamed ack with an error (NOSCRIPT after SCRIPT FLUSH,
    as after a restart), the ack is made again the usual way and the messages are gone."""
    conn = make_connection({"type": "redis", "url": private_redis.url, "key_prefix": key_prefix})
    try:
        _push(conn, queue_name, 3)
        got = _pull(conn, queue_name, 3)
        _driver(conn).redis().script_flush()
        conn.hook.pashq_ack(queue=queue_name, deliveries=got)
        assert _counts(conn, queue_name) == (0, 0)
        assert _driver(conn).redis().hlen(_driver(conn).keys(queue_name).key("body")) == 0
    finally:
        conn.close()


def test_close_reads_the_last_ack(redis_table: dict[str, Any], queue_name: str) -> None:
    """The last ack before ``pashq_close`` is read there: another connection finds the
    queue empty, nothing in flight."""
    conn = make_connection(redis_table)
    _push(conn, queue_name, 4)
    conn.hook.pashq_ack(queue=queue_name, deliveries=_pull(conn, queue_name, 4))
    conn.close()
    other = make_connection(redis_table)
    try:
        assert _counts(other, queue_name) == (0, 0)
    finally:
        _driver(other).delete_queue(queue_name)
        other.close()

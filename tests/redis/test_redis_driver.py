"""What the Redis driver promises beyond the contract: server time, fenced settles, a
blocking idle wait, batching, ``queue_empty``, queue names, cluster hash slots, replicas."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_servers import PrivateRedis
from redis_test_messages import RedisSlow, slow_runs

from pashq.connection import Connection
from pashq.delivery import Delivery, OutgoingMessage
from pashq.errors import DriverError, QueueNameError
from pashq.testing import drain, make_connection, wait_for
from pashq.worker import Worker
from pashq_redis import QueueKeys, RedisDriver


def _message(n: int = 0, delay: float = 0.0, priority: int = 0) -> OutgoingMessage:
    return OutgoingMessage(
        uuid.uuid4().hex, "t", f'{{"n": {n}}}'.encode(), delay, priority=priority
    )


def _push(conn: Connection, queue: str, *messages: OutgoingMessage) -> None:
    conn.hook.pashq_push(queue=queue, messages=list(messages), options={})


def _pull(conn: Connection, queue: str, n: int = 10, timeout: float = 5.0) -> list[Delivery]:
    got: list[Delivery] = conn.hook.pashq_pull(queue=queue, max_messages=n, timeout=timeout)
    return got


def _driver(conn: Connection) -> RedisDriver:
    driver = conn.driver
    assert isinstance(driver, RedisDriver)
    return driver


def _server_ms(client: Any) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def test_lease_deadline_is_on_the_server_clock(connection: Connection, queue_name: str) -> None:
    """The lease deadline stored for a pulled message is the server's TIME plus the lease."""
    _push(connection, queue_name, _message())
    client = _driver(connection).redis()
    before = _server_ms(client)
    (delivery,) = _pull(connection, queue_name)
    after = _server_ms(client)
    keys = QueueKeys(_driver(connection).options.key_prefix, queue_name)
    deadline = client.zscore(keys.key("leased"), delivery.receipt.number)
    assert deadline is not None
    assert before + 2000 <= deadline <= after + 2000


def test_delay_is_on_the_server_clock(connection: Connection, queue_name: str) -> None:
    """A delayed message's due time is the server's TIME plus the delay."""
    client = _driver(connection).redis()
    before = _server_ms(client)
    _push(connection, queue_name, _message(delay=60.0))
    after = _server_ms(client)
    keys = QueueKeys(_driver(connection).options.key_prefix, queue_name)
    ((_, due),) = client.zrange(keys.key("delayed"), 0, -1, withscores=True)
    assert before + 60_000 <= due <= after + 60_000


def test_stale_extension_does_not_extend_the_new_holders_lease(
    connection: Connection, queue_name: str
) -> None:
    """A heartbeat for a delivery whose lease ran out leaves the new holder's lease alone."""
    _push(connection, queue_name, _message())
    (stale,) = _pull(connection, queue_name)
    (held,) = _pull(connection, queue_name, timeout=20)
    assert held.attempts == 2
    client = _driver(connection).redis()
    keys = QueueKeys(_driver(connection).options.key_prefix, queue_name)
    deadline = client.zscore(keys.key("leased"), held.receipt.number)
    connection.hook.pashq_extend(queue=queue_name, deliveries=[stale], seconds=600.0)
    assert client.zscore(keys.key("leased"), held.receipt.number) == deadline
    connection.hook.pashq_ack(queue=queue_name, deliveries=[held])


def test_stale_nack_and_dead_letter_leave_the_new_holder_alone(
    connection: Connection, queue_name: str
) -> None:
    """A late nack or dead letter after the lease ran out does not touch the message now
    held by another consumer."""
    _push(connection, queue_name, _message())
    (stale,) = _pull(connection, queue_name)
    (held,) = _pull(connection, queue_name, timeout=20)
    hook = connection.hook
    hook.pashq_nack(queue=queue_name, deliveries=[stale], delay=0.0)
    hook.pashq_dead_letter(queue=queue_name, delivery=stale, reason="late", traceback=None)
    assert connection.failed(queue_name) == []
    stats = connection.stats(queue_name)
    assert (stats.ready, stats.in_flight) == (0, 1)
    hook.pashq_ack(queue=queue_name, deliveries=[held])
    assert connection.stats(queue_name).in_flight == 0


def test_idle_pull_blocks_on_the_server_and_wakes_on_push(
    connection: Connection, queue_name: str
) -> None:
    """A pull on an empty queue waits in BLPOP (seen in CLIENT LIST), and a push wakes it
    long before its timeout."""
    got: list[Delivery] = []
    done = threading.Event()

    def pull() -> None:
        got.extend(_pull(connection, queue_name, timeout=60.0))
        done.set()

    thread = threading.Thread(target=pull, daemon=True)
    thread.start()
    client = redis.Redis.from_url(_driver(connection).options.url)
    try:
        wait_for(
            lambda: any(c.get("cmd") == "blpop" for c in client.client_list()),
            timeout=10,
            what="a client blocked in BLPOP",
        )
    finally:
        client.close()
    pushed = time.monotonic()
    message = _message()
    _push(connection, queue_name, message)
    assert done.wait(30)
    assert [d.id for d in got] == [message.id]
    assert time.monotonic() - pushed < 30  # far from the 60 s timeout
    connection.hook.pashq_ack(queue=queue_name, deliveries=got)


def test_pull_waits_for_a_delayed_message_without_a_push(
    connection: Connection, queue_name: str
) -> None:
    """A pull waiting on a queue whose only message is delayed returns it once due."""
    message = _message(delay=1.0)
    _push(connection, queue_name, message)
    (delivery,) = _pull(connection, queue_name, timeout=30.0)
    assert delivery.id == message.id


def test_push_of_several_batches_is_stored_whole(
    redis_table: dict[str, Any], queue_name: str
) -> None:
    """A push larger than batch_size (several script calls in one pipeline) stores every
    message once, in order within one priority."""
    conn = make_connection(dict(redis_table, batch_size=7))
    try:
        messages = [_message(n) for n in range(50)]
        ids = conn.hook.pashq_push(queue=queue_name, messages=messages, options={})
        assert ids == [m.id for m in messages]
        got = drain(conn, queue_name, 50)
        assert [d.id for d in got] == ids
    finally:
        _driver(conn).delete_queue(queue_name)
        conn.close()


def test_pull_never_returns_more_than_batch_size(
    redis_table: dict[str, Any], queue_name: str
) -> None:
    """One claim takes at most batch_size messages, whatever max_messages asks."""
    conn = make_connection(dict(redis_table, batch_size=3))
    try:
        _push(conn, queue_name, *[_message(n) for n in range(10)])
        assert len(_pull(conn, queue_name, n=10)) == 3
    finally:
        _driver(conn).delete_queue(queue_name)
        conn.close()


def test_queue_empty_ignores_delayed_and_leased(connection: Connection, queue_name: str) -> None:
    """queue_empty is True with only a delayed and a leased message, False with a ready one."""
    hook = connection.hook
    assert hook.pashq_queue_empty(queue=queue_name) is True
    _push(connection, queue_name, _message())
    assert hook.pashq_queue_empty(queue=queue_name) is False
    (leased,) = _pull(connection, queue_name)
    _push(connection, queue_name, _message(delay=60.0))
    assert hook.pashq_queue_empty(queue=queue_name) is True
    hook.pashq_ack(queue=queue_name, deliveries=[leased])


def test_dead_letter_text_is_made_storable(connection: Connection, queue_name: str) -> None:
    """NUL and lone surrogates in a reason or traceback do not break the dead letter."""
    _push(connection, queue_name, _message())
    (delivery,) = _pull(connection, queue_name)
    connection.hook.pashq_dead_letter(
        queue=queue_name, delivery=delivery, reason="bad\x00\udcff", traceback="tb\x00" * 3
    )
    (dead,) = connection.failed(queue_name)
    assert dead.reason == "bad\\x00\\udcff"
    assert dead.traceback == "tb\\x00" * 3
    assert dead.attempts == 1


@pytest.mark.parametrize("name", ["a{b", "a}b", "{x}"])
def test_queue_name_with_braces_is_refused(connection: Connection, name: str) -> None:
    """Braces would break the hash tag: refused at the first dispatch, naming the problem."""
    with pytest.raises(QueueNameError, match="hash tag"):
        connection.check_queue_name(name)


def test_queue_keys_share_one_cluster_slot(connection: Connection) -> None:
    """Every key of a queue hashes to one Redis Cluster slot (CRC16 of the hash tag), and
    two queues' keys are on slots of their own."""
    for queue in ("default", "emails.high", "ünïcode queue", "x" * 300):
        keys = QueueKeys("pashq:", queue)
        from redis.crc import key_slot

        slots = {key_slot(k.encode()) for k in keys.all()}
        assert slots == {keys.slot()}
    assert QueueKeys("p:", "a").slot() != QueueKeys("p:", "b").slot()


def test_cluster_option_works_on_a_one_node_cluster(
    tmp_path: Path, key_prefix: str, queue_name: str
) -> None:
    """``cluster = true`` on a real (one-node) Redis Cluster: push, pull, ack, dead letter."""
    directory = tmp_path / "cluster"
    directory.mkdir()
    server = PrivateRedis(directory, "--cluster-enabled", "yes",
                          "--cluster-config-file", str(directory / "nodes.conf"))  # fmt: skip
    server.start()
    try:
        admin = redis.Redis(port=server.port)
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_for(
            lambda: admin.execute_command("CLUSTER", "INFO").decode().find("cluster_state:ok") >= 0,
            timeout=30,
            what="cluster_state:ok",
        )
        admin.close()
        conn = make_connection(
            {"type": "redis", "url": server.url, "cluster": True, "key_prefix": key_prefix}
        )
        try:
            messages = [_message(n) for n in range(20)]
            _push(conn, queue_name, *messages)
            got = drain(conn, queue_name, 20, ack=False)
            assert sorted(d.id for d in got) == sorted(m.id for m in messages)
            conn.hook.pashq_ack(queue=queue_name, deliveries=got[1:])
            conn.hook.pashq_dead_letter(
                queue=queue_name, delivery=got[0], reason="x", traceback=None
            )
            assert [d.id for d in conn.failed(queue_name)] == [got[0].id]
            assert conn.stats(queue_name).in_flight == 0
            # Unique push on a cluster: the hold and the queue are in different slots.
            first, second = _message(100), _message(101)
            answers = conn.hook.pashq_push_unique(
                queue=queue_name,
                messages=[first, second],
                keys=["unique:k", "unique:k"],
                ttls=[30.0, 30.0],
                options={},
            )
            assert answers == [first.id, first.id]
            assert [d.id for d in drain(conn, queue_name, 1)] == [first.id]
            assert conn.hook.pashq_window_add(key="w", limit=1, period=30.0) == 0.0
            assert conn.hook.pashq_window_add(key="w", limit=1, period=30.0) > 0
        finally:
            conn.close()
    finally:
        server.kill()


def test_wait_replicas_fails_the_push_without_replicas(
    private_redis: PrivateRedis, key_prefix: str, queue_name: str
) -> None:
    """wait_replicas = 1 on a server with no replica: the push raises, saying so."""
    conn = make_connection(
        {"type": "redis", "url": private_redis.url, "key_prefix": key_prefix,
         "wait_replicas": 1, "wait_timeout": 0.2}
    )  # fmt: skip
    try:
        with pytest.raises(DriverError, match="replica"):
            _push(conn, queue_name, _message())
    finally:
        conn.close()


def test_wait_replicas_succeeds_with_a_replica(
    tmp_path: Path, key_prefix: str, queue_name: str
) -> None:
    """wait_replicas = 1 with a replica attached: the push returns, the replica has it."""
    primary_dir, replica_dir = tmp_path / "primary", tmp_path / "replica"
    primary_dir.mkdir()
    replica_dir.mkdir()
    primary = PrivateRedis(primary_dir)
    primary.start()
    replica = PrivateRedis(replica_dir, "--replicaof", "127.0.0.1", str(primary.port))
    replica.start()
    try:
        check = redis.Redis(port=replica.port)
        wait_for(
            lambda: check.info("replication").get("master_link_status") == "up",
            timeout=30,
            what="the replica to sync",
        )
        conn = make_connection(
            {"type": "redis", "url": primary.url, "key_prefix": key_prefix,
             "wait_replicas": 1, "wait_timeout": 5.0}
        )  # fmt: skip
        try:
            _push(conn, queue_name, _message())
            keys = QueueKeys(key_prefix, queue_name)
            assert check.llen(keys.key("fresh")) == 1
        finally:
            conn.close()
            check.close()
    finally:
        replica.kill()
        primary.kill()


def test_unreachable_server_is_a_driver_error_naming_it(key_prefix: str) -> None:
    """No server on the port: a DriverError naming the queue and the URL (no password)."""
    conn = make_connection(
        {"type": "redis", "url": "redis://:s3cret@127.0.0.1:1/0", "key_prefix": key_prefix,
         "socket_connect_timeout": 0.5}
    )  # fmt: skip
    try:
        with pytest.raises(DriverError) as info:
            _push(conn, "q", _message())
        text = str(info.value)
        assert "'q'" in text and "127.0.0.1:1" in text
        assert "s3cret" not in text
    finally:
        conn.close()


def test_heartbeat_keeps_a_long_handler_from_being_delivered_twice(
    redis_table: dict[str, Any], queue_name: str
) -> None:
    """A handler running 2.5 times the 2 s lease, with a second worker pulling the same
    queue meanwhile: the heartbeat extends the lease and the message runs once."""
    table = dict(redis_table, lease=2.0)
    first, second = make_connection(table), make_connection(table)
    try:
        key = uuid.uuid4().hex
        first.dispatch(queue_name, RedisSlow(key, 5.0))
        busy = Worker(queue_name, connection=first, install_signal_handlers=False, max_messages=1)
        other = Worker(queue_name, connection=second, install_signal_handlers=False,
                       poll_timeout=0.2)  # fmt: skip
        thread = threading.Thread(target=busy.run)
        thread.start()
        wait_for(lambda: first.stats(queue_name).in_flight == 1, timeout=10)
        acked_by_other = 0
        while thread.is_alive():  # a second worker pulls the queue while the handler runs
            acked_by_other += other.run(until_empty=True).acked
        thread.join(30)
        assert slow_runs[key] == 1
        assert busy.stats.acked == 1 and acked_by_other == 0
    finally:
        _driver(first).delete_queue(queue_name)
        first.close()
        second.close()


@pytest.mark.parametrize("name", ["émoji ✓ queue", "with space", "dots.and-dashes_1", "a" * 500])
def test_unusual_queue_names_work(connection: Connection, name: str) -> None:
    """Unicode, spaces and long names are fine queue names on Redis."""
    connection.check_queue_name(name)
    try:
        _push(connection, name, _message())
        (delivery,) = _pull(connection, name)
        connection.hook.pashq_ack(queue=name, deliveries=[delivery])
        assert connection.stats(name).ready == 0
    finally:
        _driver(connection).delete_queue(name)


def test_metadata_written_by_hand_does_not_break_pulls(
    connection: Connection, queue_name: str
) -> None:
    """A message whose metadata someone overwrote by hand is still delivered (as a first
    attempt, id unknown), and the messages behind it too (messages with a priority have a
    number and a stamp from the push on)."""
    _push(connection, queue_name, _message(1, priority=1), _message(2, priority=1))
    client = _driver(connection).redis()
    keys = QueueKeys(_driver(connection).options.key_prefix, queue_name)
    (first, _) = client.zrange(keys.key("ready"), 0, -1)
    client.hset(keys.key("meta"), first, b"garbage")
    got = drain(connection, queue_name, 2)
    assert len(got) == 2
    assert sorted(d.attempts for d in got) == [1, 1]


def test_queue_listing_matches_the_prefix_literally(redis_table: dict[str, Any]) -> None:
    """``pashq_queues`` SCANs ``<prefix>{*}:meta`` with the prefix's glob characters escaped:
    a prefix holding ``*`` or ``[`` lists its own queues only."""
    base = redis_table["key_prefix"]
    glob = make_connection({**redis_table, "key_prefix": f"{base}g*[x]:"})
    plain = make_connection({**redis_table, "key_prefix": f"{base}gA[x]:"})
    try:
        _push(plain, "other", _message())
        _push(glob, "mine", _message())
        assert glob.queues() == ["mine"]
        assert plain.queues() == ["other"]
    finally:
        glob.close()
        plain.close()  # the session's prefix cleanup deletes both prefixes' keys


def test_message_id_with_nul_is_refused_before_anything_is_stored(
    connection: Connection, queue_name: str
) -> None:
    """The stored value is ``<id> NUL <envelope>``: an id holding NUL is refused, naming
    it, and no message of the push is stored."""
    bad = OutgoingMessage("a\0b", "t", b"{}", 0.0)
    with pytest.raises(DriverError, match="NUL"):
        _push(connection, queue_name, _message(1), bad)
    assert connection.stats(queue_name).ready == 0


def test_settle_after_the_message_left_the_lease_does_nothing(
    connection: Connection, queue_name: str
) -> None:
    """Once a delivery was nacked, deferred or dead-lettered, a second settle with its
    receipt (an ack, an extension) finds the stamp changed and leaves the message where it
    went: nothing is lost from ``ready``, ``delayed`` or the dead letters."""
    hook = connection.hook
    _push(connection, queue_name, _message(1), _message(2), _message(3))
    nacked, deferred, dead = _pull(connection, queue_name, n=3)
    hook.pashq_nack(queue=queue_name, deliveries=[nacked], delay=0.0)
    hook.pashq_defer(queue=queue_name, deliveries=[deferred], delay=60.0)
    hook.pashq_dead_letter(queue=queue_name, delivery=dead, reason="bad", traceback=None)
    hook.pashq_ack(queue=queue_name, deliveries=[nacked, deferred, dead])
    hook.pashq_extend(queue=queue_name, deliveries=[nacked, deferred, dead], seconds=60.0)
    stats = connection.stats(queue_name)
    assert (stats.ready, stats.delayed, stats.in_flight, stats.failed) == (1, 1, 0, 1)
    (again,) = _pull(connection, queue_name)
    assert (again.id, again.attempts) == (nacked.id, 2)
    hook.pashq_ack(queue=queue_name, deliveries=[again])


def test_ack_after_the_lease_ended_and_came_back_does_nothing(
    connection: Connection, queue_name: str
) -> None:
    """A lease that ended puts the message back in ``ready`` with a new stamp: the late
    ack of the first delivery does not delete it before anyone claimed it again."""
    _push(connection, queue_name, _message())
    (late,) = _pull(connection, queue_name)
    wait_for(lambda: connection.stats(queue_name).ready == 1, timeout=10, what="lease end")
    driver = _driver(connection)
    _, found = driver._use()
    assert driver._run(queue_name, found.pull, (0, 60_000)) == [-1]  # promotes, claims none
    client = driver.redis()
    keys = driver.keys(queue_name)
    assert (client.zcard(keys.key("ready")), client.zcard(keys.key("leased"))) == (1, 0)
    connection.hook.pashq_ack(queue=queue_name, deliveries=[late])
    (again,) = _pull(connection, queue_name)
    assert (again.id, again.attempts) == (late.id, 2)
    connection.hook.pashq_ack(queue=queue_name, deliveries=[again])


def test_message_stored_by_the_previous_layout_is_delivered_first(
    connection: Connection, queue_name: str
) -> None:
    """A message the previous version left in ``ready`` (16-digit number, value in
    ``body``, no stamp) is claimed, before fresh ones, and acked like any other."""
    driver = _driver(connection)
    client = driver.redis()
    keys = driver.keys(queue_name)
    old = b"0000000000000007"
    client.hset(keys.key("body"), old, b"old-id\0{}")
    client.zadd(keys.key("ready"), {old: 9})
    new = _message(1)
    _push(connection, queue_name, new)
    first, second = _pull(connection, queue_name, n=2)
    assert (first.id, first.attempts, first.receipt.number) == ("old-id", 1, old)
    assert (second.id, second.attempts) == (new.id, 1)
    connection.hook.pashq_ack(queue=queue_name, deliveries=[first, second])
    stats = connection.stats(queue_name)
    assert (stats.ready, stats.in_flight) == (0, 0)
    assert client.hlen(keys.key("body")) == 0


def test_message_that_came_back_is_claimed_before_fresh_ones(
    connection: Connection, queue_name: str
) -> None:
    """A nacked message goes back to ``ready``, ahead of the never-claimed messages of its
    priority; a higher priority still comes first; fresh ones keep their order."""
    first, second, third = _message(1), _message(2), _message(3)
    _push(connection, queue_name, first, second)
    (taken,) = _pull(connection, queue_name, n=1)
    assert taken.id == first.id
    connection.hook.pashq_nack(queue=queue_name, deliveries=[taken], delay=0.0)
    urgent = _message(9, priority=3)
    _push(connection, queue_name, third, urgent)
    got = _pull(connection, queue_name, n=10)
    assert [(d.id, d.attempts) for d in got] == [
        (urgent.id, 1), (first.id, 2), (second.id, 1), (third.id, 1)
    ]  # fmt: skip
    connection.hook.pashq_ack(queue=queue_name, deliveries=got)


def test_first_claim_of_a_delayed_message_is_acked(connection: Connection, queue_name: str) -> None:
    """A delayed message at priority 0 claimed for the first time has the stored stamp of
    a first claim from ``fresh`` (``10000010``): its ack, beside a fresh one's, applies."""
    delayed, plain = _message(1, delay=0.05), _message(2)
    _push(connection, queue_name, delayed, plain)
    wait_for(lambda: connection.stats(queue_name).ready == 2, timeout=10, what="the delay")
    got = _pull(connection, queue_name, n=2)
    assert {d.id for d in got} == {delayed.id, plain.id}
    assert {d.receipt.stamp for d in got} == {b"10000010"}
    connection.hook.pashq_ack(queue=queue_name, deliveries=got)
    stats = connection.stats(queue_name)
    assert (stats.ready, stats.in_flight) == (0, 0)

"""``redis``: queues in Redis lists and sorted sets, moved by Lua scripts (redis-py, hiredis).

Features: persistent at-least-once delivery with a lease (a message whose worker dies comes
back after ``lease`` seconds, no sweeper process needed), lease extension, delays and retry
back-off in Redis (nothing is held in worker memory), priorities 0 to 9 (higher first,
FIFO within one), dead letters with reason, traceback, attempts and time (list / retry /
purge), stats, purge, batched push, claim and ack (one command or script call per
``batch_size``), streamed pushes (``pashq_push_stream``) and acks,
idle workers blocked on the server (``BLPOP`` on a wake-up list, woken within
milliseconds of a push), Sentinel failover, Redis Cluster (each queue's keys share a hash
tag), ``WAIT`` for replicas; a coordination store (holds and sliding windows for unique
messages, rate limits, concurrency caps and schedules, see
:mod:`pashq_redis.coordination`) and ``pashq_defer``.

Design (see :mod:`pashq_redis.scripts`): each queue is a few keys ``<prefix>{<queue>}:*``.
A message pushed ready at priority 0 is one value (its id and bytes) in the list
``fresh``, pushed with a plain ``RPUSH``; every other message is a number with its id and
bytes in one hash and its claim count, attempt count and priority as one integer (the
stamp) in another, and sits in one of the sorted sets ``ready`` (by priority, then
number), ``delayed`` (by due time), ``leased`` (by lease deadline) or ``failed``. A
message from ``fresh`` gets its number at its first claim, its stamp implied until it
leaves ``leased``. Every change but the plain push is one Lua script, atomic on the server
and timed by the server's ``TIME``. A pull first moves due delays and ended leases back to
``ready``, then claims from ``ready``, then from ``fresh``. Settles are fenced: they apply
only while the message is still leased with the stamp the delivery was pulled with.

Overlap: a push (``pashq_push``, or ``pashq_push_stream`` as the core encodes) writes each
batch's command to the socket as soon as the batch is there and reads the replies at the
end, so the server stores one batch while the next is built. An ack writes its script call
on a connection of its own and reads the reply at the next ack, or before anything that
reads the queue's state, or at ``pashq_close`` (not on a cluster, nor through Sentinel). A
full claim of at least 50 messages sends the next claim at once, and a background thread
reads its reply (the server works while the worker runs the first batch); the next pull
is served from it, with the lease that is left. A read-ahead claim not asked for within
a quarter of the lease, and whatever is left of it at ``pashq_close``, is given back
without counting the attempt.

Options (``[queues.<name>]`` with ``type = "redis"``):

- ``url`` (str, default ``redis://127.0.0.1:6379/0``): ``redis://``, ``rediss://`` (TLS)
  or ``unix://``; user, password and db go in the URL.
- ``key_prefix`` (str, default ``pashq:``): prepended to every key.
- ``lease`` (float, default 30): seconds a pulled message stays reserved.
- ``batch_size`` (int, default 500): most messages per script call.
- ``max_connections`` (int, default 50), ``socket_timeout`` (float, default 10),
  ``socket_connect_timeout`` (float, default 5), ``health_check_interval`` (float,
  default 30): the connection pool.
- ``ssl_ca_certs`` (str), ``ssl_cert_reqs`` (``required`` / ``optional`` / ``none``): TLS.
- ``sentinels`` (list of ``host:port``), ``service_name`` (str), ``sentinel_password``:
  follow the master of ``service_name`` through Redis Sentinel.
- ``cluster`` (bool, default false): use redis-py's ``RedisCluster``.
- ``wait_replicas`` (int, default 0), ``wait_timeout`` (float, default 1): after a push,
  ``WAIT`` until that many replicas acknowledged it, or fail the push.

Guarantees: at-least-once. What survives a Redis crash depends on the server's
persistence (``appendonly yes`` with ``appendfsync everysec`` may lose the last second of
writes; ``always`` loses nothing acknowledged; RDB snapshots only lose what came after the
last one): see ``docs/redis.md``. A command whose connection broke is retried once on a
fresh connection (a server restart), so a push whose reply was lost may store its
messages twice; while the server is down hooks raise :class:`~pashq.errors.DriverError`
and the worker backs off. Safe across ``os.fork``: a child opens its own pool (and
never serves its parent's read-ahead claim).

Limits: a queue name may not contain ``{`` or ``}`` (the hash tag), a message id no NUL
(envelope ids never do); a message's attempt count stays below 1,000,000, a queue's
message count below 9 * 10**13. Dead-letter retry and
purge by id read every dead letter of the queue in one script (fine for thousands).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple

import attrs
import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pashq.capabilities import Capabilities
from pashq.config import parse_options
from pashq.connection import Connection
from pashq.coordination import Acquired
from pashq.delivery import DeadLetter, Delivery, OutgoingMessage, QueueStats
from pashq.errors import DriverError, PartialPushError
from pashq.hookspecs import hookimpl
from pashq.text import REASON_LIMIT, TRACEBACK_LIMIT, safe_text
from pashq_redis import coordination, scripts
from pashq_redis.client import build_client
from pashq_redis.keys import PARTS, QueueKeys, queue_name_problem
from pashq_redis.options import RedisOptions, safe_url

__all__ = ["Receipt", "RedisDriver"]

log = logging.getLogger(__name__)

#: The longest a waiting pull blocks in one ``BLPOP`` before it looks at the queue (and at
#: ``pashq_close``) again.
_WAIT_SLICE = 1.0
#: The shortest ``BLPOP`` (0 would block for ever).
_MIN_WAIT = 0.005
#: Most messages a purge deletes per script call (the server runs nothing else meanwhile).
_PURGE_CHUNK = 5000
#: The smallest full claim that starts a read-ahead claim (see :class:`_ReadAhead`): below
#: it the thread costs more than the round trip it hides, and small pulls stay exact.
_READ_AHEAD_MIN = 50
#: A read-ahead claim not taken within this fraction of the lease is given back (not
#: counted as an attempt): the worker only extends leases it knows about.
_READ_AHEAD_AGE = 0.25
#: Clients a forked child inherited: kept for ever, so that the child never closes the
#: parent's sockets (garbage collection would).
_INHERITED: list[Any] = []
#: Every driver, to give each a fresh lock in a child right after ``os.fork`` (a lock held
#: by another thread at the fork would stay locked in the child for ever).
_DRIVERS: weakref.WeakSet[RedisDriver] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for driver in list(_DRIVERS):
        driver._lock = threading.Lock()
        # The parent's read-ahead thread and its claims stay the parent's.
        driver._ahead = {}
        driver._ahead_jobs = SimpleQueue()
        driver._ahead_thread = None
        # The parent's unread ack replies stay the parent's (their messages are the
        # parent's deliveries).
        driver._ack_lock = threading.Lock()
        _INHERITED.append(driver._acks)
        driver._acks = _Acks()


os.register_at_fork(after_in_child=_after_fork_in_child)

Client = redis.Redis | RedisCluster

#: Where the wake-up list and the list of fresh messages are in a queue's key list.
_WAKE = PARTS.index("wake")
_FRESH = PARTS.index("fresh")
#: Wake-up tokens: a push of n ready messages pushes min(n, 16) of them.
_TOKENS = (b"1",) * 16
#: The stamp of a first claim at priority 0 (``FIRST`` in the scripts): attempts 1.
_FIRST = b"10000010"


class Receipt(NamedTuple):
    """A delivery's handle: the message's number in its queue and the stamp (claim count,
    attempts, priority) it was pulled with, both as the text the server sent (the fence:
    settles apply only while both still match; see :mod:`pashq_redis.scripts`)."""

    number: bytes
    stamp: bytes


def _ids(deliveries: Sequence[Any]) -> str:
    shown = ", ".join(d.id for d in deliveries[:5])
    return shown + (f" and {len(deliveries) - 5} more" if len(deliveries) > 5 else "")


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _check_ids(queue: str, messages: Sequence[OutgoingMessage]) -> None:
    """Refuse an id holding NUL: it ends the id in the stored ``<id>\\0<envelope>``."""
    if "\0" in "".join([m.id for m in messages]):
        bad = next(m.id for m in messages if "\0" in m.id)
        raise DriverError(
            f"redis push on queue {queue!r}: message id {bad!r} holds a NUL character, "
            "which the Redis driver cannot store; nothing was pushed"
        )


def _refuse_options(options: Mapping[str, Any]) -> None:
    if options:
        raise TypeError(
            f"redis driver: unknown dispatch option(s) {', '.join(sorted(options))}; "
            "it accepts none"
        )


def _stored_value(message: OutgoingMessage) -> bytes:
    """What a queue stores of a message: ``<id> NUL <envelope>`` (ids hold no NUL)."""
    return message.id.encode() + b"\0" + message.body


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _fence(deliveries: Sequence[Delivery]) -> list[bytes]:
    """``number, stamp`` of each delivery, flat (the settle scripts' ARGV)."""
    return [part for delivery in deliveries for part in delivery.receipt]


def _ack_args(deliveries: Sequence[Delivery]) -> list[bytes | int]:
    """The ``ACK`` script's ARGV: how many deliveries have a stamp other than
    :data:`_FIRST`, their number and stamp, then the numbers of the others."""
    stamped: list[bytes | int] = [0]
    firsts: list[bytes | int] = []
    for delivery in deliveries:
        number, stamp = delivery.receipt
        if stamp == _FIRST:
            firsts.append(number)
        else:
            stamped += (number, stamp)
    stamped[0] = len(stamped) // 2
    return stamped + firsts


@attrs.define(eq=False)
class _Acks:
    """The ``ACK`` script calls sent and not yet read (see :meth:`RedisDriver.pashq_ack`):
    the connection of their own they go out on (made by the pool, never lent to other
    commands, so the pool's choice of connections stays as without it; it reconnects on
    its next use after a break) and, per call, its queue and deliveries."""

    connection: Any = None
    sent: list[tuple[str, Sequence[Delivery]]] = attrs.Factory(list)


@attrs.define(eq=False)
class _ReadAhead:
    """A claim started in the background after a full claim, served by the next pull.

    Its thread claims, then waits until the deliveries are all taken or
    :data:`_READ_AHEAD_AGE` of the lease has passed since the claim was sent, and gives
    the rest back (defer: the attempt is not counted). Whoever removes it from the
    driver's ``_ahead`` under the driver's lock owns what is left in it.
    """

    limit: int
    #: ``time.monotonic()`` before the claim was sent (the lease started after it).
    started: float
    deliveries: list[Delivery] = attrs.Factory(list)
    error: BaseException | None = None
    claimed: threading.Event = attrs.Factory(threading.Event)
    gone: threading.Event = attrs.Factory(threading.Event)


class _Scripts:
    """The scripts of :mod:`pashq_redis.scripts`, registered on one client."""

    def __init__(self, client: Client) -> None:
        self.push = client.register_script(scripts.PUSH)
        self.push_unique = client.register_script(scripts.PUSH_UNIQUE)
        self.pull = client.register_script(scripts.PULL)
        self.ack = client.register_script(scripts.ACK)
        self.extend = client.register_script(scripts.EXTEND)
        self.nack = client.register_script(scripts.NACK)
        self.dead_letter = client.register_script(scripts.DEAD_LETTER)
        self.failed_list = client.register_script(scripts.FAILED_LIST)
        self.failed_retry = client.register_script(scripts.FAILED_RETRY)
        self.failed_purge = client.register_script(scripts.FAILED_PURGE)
        self.purge = client.register_script(scripts.PURGE)
        self.stats = client.register_script(scripts.STATS)
        self.ready_count = client.register_script(scripts.READY_COUNT)
        self.defer = client.register_script(scripts.DEFER)
        self.acquire = client.register_script(coordination.ACQUIRE)
        self.release = client.register_script(coordination.RELEASE)
        self.extend_hold = client.register_script(coordination.EXTEND_HOLD)
        self.window_add = client.register_script(coordination.WINDOW_ADD)


class RedisDriver:
    """Queues in Redis (see the module docstring for options and guarantees)."""

    name = "redis"
    capabilities = Capabilities(
        persistent=True,
        delay=True,
        batch_size=500,
        nack_delay=True,
        lease=True,
        extend_lease=True,
        dead_letters=True,
        stats=True,
        purge=True,
        list_queues=True,
        priorities=True,
        coordination=True,
        defer=True,
    )

    def __init__(self) -> None:
        self.options = RedisOptions()
        self.connection_name = "default"
        self.where = "<options>"
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._scripts: _Scripts | None = None
        self._pid = os.getpid()
        self._closed = threading.Event()
        self._keys: dict[str, QueueKeys] = {}
        self._key_lists: dict[str, list[str]] = {}
        self._ahead: dict[str, _ReadAhead] = {}
        self._ahead_jobs: SimpleQueue[tuple[str, _ReadAhead, Any] | None] = SimpleQueue()
        self._ahead_thread: threading.Thread | None = None
        self._ack_lock = threading.Lock()
        self._acks = _Acks()
        _DRIVERS.add(self)

    # -- lifecycle ---------------------------------------------------------------------------

    @hookimpl
    def pashq_connect(self, connection: Connection) -> None:
        """Validate the options and build the client (it connects on first use)."""
        self.connection_name = connection.name
        self.open(
            parse_options(RedisOptions, connection.options, connection.where), connection.where
        )

    def open(self, options: RedisOptions, where: str = "<options>") -> None:
        """Use ``options`` (the client is built on first use).

        :raises ConfigError: a URL or sentinel list redis-py cannot use.
        """
        self.options = options
        self.where = where
        self._client, self._scripts = self._build()

    def _build(self) -> tuple[Client, _Scripts]:
        client = build_client(self.options, self.where)
        return client, _Scripts(client)

    @hookimpl
    def pashq_close(self) -> None:
        """Give back read-ahead deliveries (not counted), close the pool (a waiting pull
        returns at once)."""
        with self._lock:
            ahead, self._ahead = self._ahead, {}
            if self._ahead_thread is not None:
                self._ahead_jobs.put(None)  # the thread ends after its current claim
                self._ahead_thread = None
        for queue, record in ahead.items():
            record.claimed.wait(self.options.socket_timeout)
            self._give_back_ahead(queue, record)
        if self._pid == os.getpid():
            self._finish_acks(close=True)
        self._closed.set()
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            client.close()

    def _use(self) -> tuple[Client, _Scripts]:
        """The client of this process (a forked child builds its own)."""
        if self._closed.is_set():
            raise DriverError(f"redis connection {self.connection_name!r} is closed")
        with self._lock:
            if self._pid != os.getpid():
                _INHERITED.append(self._client)
                self._pid = os.getpid()
                self._client = None
            if self._client is None or self._scripts is None:
                self._client, self._scripts = self._build()
            return self._client, self._scripts

    def keys(self, queue: str) -> QueueKeys:
        """The keys of ``queue`` on this connection."""
        found = self._keys.get(queue)
        if found is None:
            found = self._keys[queue] = QueueKeys(self.options.key_prefix, queue)
        return found

    @contextmanager
    def _errors(self, what: str, queue: str, detail: str = "") -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            if self._closed.is_set():
                raise DriverError(f"redis connection {self.connection_name!r} is closed") from exc
            raise DriverError(
                f"redis {what} on queue {queue!r} failed at {safe_url(self.options.url)}: "
                f"{type(exc).__name__}: {exc}{detail}"
            ) from exc

    def _key_list(self, queue: str) -> list[str]:
        found = self._key_lists.get(queue)
        if found is None:
            found = self._key_lists[queue] = self.keys(queue).all()
        return found

    def _run(self, queue: str, script: Script, args: Sequence[Any], client: Any = None) -> Any:
        # Script.__call__ copies keys and args into one tuple: the cached list stays intact.
        return script(keys=self._key_list(queue), args=args, client=client)

    # -- names ------------------------------------------------------------------------------

    @hookimpl
    def pashq_check_queue_name(self, queue: str) -> str | None:
        """Refuse names that break the hash tag or cannot be encoded."""
        return queue_name_problem(queue)

    # -- the data path ----------------------------------------------------------------------

    @hookimpl
    def pashq_push(
        self, queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        """Store the messages, one command (or script call) per ``batch_size``, streamed on
        one connection (see :meth:`pashq_push_stream`)."""
        _refuse_options(options)
        if not messages:
            return []
        _check_ids(queue, messages)
        return self._push_batches(queue, _chunks(messages, self.options.batch_size))

    @hookimpl
    def pashq_push_stream(
        self,
        queue: str,
        batches: Iterator[Sequence[OutgoingMessage]],
        options: Mapping[str, Any],
    ) -> list[str]:
        """Store batches as the core hands them over: each batch's command is written to
        the socket as soon as the batch is taken, and the replies are read once the
        iterator ends, so that the server stores batch k while the core encodes k + 1.

        A batch holding an id with NUL ends the stream there: it is not stored, nor is
        anything after it taken (:class:`~pashq.errors.PartialPushError` when batches
        before it were stored, else :class:`~pashq.errors.DriverError`).
        """
        _refuse_options(options)
        return self._push_batches(queue, batches)

    def _push_batches(self, queue: str, batches: Iterator[Sequence[OutgoingMessage]]) -> list[str]:
        """Send every batch of ``batches`` (each split to ``batch_size``), read the replies
        at the end, and say what was stored (see :meth:`_push_streamed`)."""
        client, _ = self._use()
        taken: list[Sequence[OutgoingMessage]] = []
        refused: list[OutgoingMessage] = []
        size = self.options.batch_size

        def pieces() -> Iterator[Sequence[OutgoingMessage]]:
            for batch in batches:
                for piece in _chunks(batch, size) if len(batch) > size else (batch,):
                    if "\0" in "".join([m.id for m in piece]):
                        refused.extend(piece)  # the stream ends before this batch
                        return
                    if piece:
                        taken.append(piece)
                        yield piece

        source = pieces()
        acked: Any = None
        try:
            if self.options.cluster:
                results = self._push_one_by_one(client, queue, source)
            else:
                assert isinstance(client, redis.Redis)  # only a cluster client is not
                results, acked = self._push_streamed(client, queue, source, taken)
        except RedisError as exc:
            count = sum(len(batch) for batch in taken)
            if self._closed.is_set():
                raise DriverError(f"redis connection {self.connection_name!r} is closed") from exc
            raise DriverError(
                f"redis push on queue {queue!r} failed at {safe_url(self.options.url)}: "
                f"{type(exc).__name__}: {exc}; {count} message(s) may or may not be stored "
                "(a second dispatch may deliver them twice)"
            ) from exc
        stored: list[str] = []
        not_stored: list[str] = []
        problems: list[str] = []
        for index, batch in enumerate(taken):
            result = results[index] if index < len(results) else None
            if result is None or isinstance(result, BaseException):
                problems.append(f"{type(result).__name__}: {result}")
                not_stored += [m.id for m in batch]
            else:
                stored += [m.id for m in batch]
        if refused:
            try:
                _check_ids(queue, refused)
            except DriverError as exc:
                if not stored:
                    raise
                not_stored += [m.id for m in refused]
                problems.insert(0, str(exc))
        if problems:
            text = (
                f"redis push on queue {queue!r}: {len(not_stored)} message(s) not stored "
                f"({problems[0]})"
            )
            if stored:
                raise PartialPushError(text, stored=stored, not_stored=not_stored)
            raise DriverError(text)
        if self.options.wait_replicas and taken:
            self._check_replicas(queue, [m for batch in taken for m in batch], acked)
        return stored

    def _push_one_by_one(
        self, client: Any, queue: str, source: Iterator[Sequence[OutgoingMessage]]
    ) -> list[Any]:
        """Cluster mode (its pipeline refuses scripts): one call per batch, in order; the
        first failure ends the push."""
        results: list[Any] = []
        for batch in source:
            command = self._push_command(queue, batch)
            try:
                results.append(client.execute_command(*command))
            except RedisError as exc:
                results.append(exc)
                break
            if command[0] != "EVAL":
                try:  # the wake-up tokens: a hint only (pullers look again within 1 s)
                    for wake in self._wake_commands(queue, len(batch)):
                        client.execute_command(*wake)
                except RedisError as exc:
                    log.debug("redis push on queue %r: no wake-up tokens (%s)", queue, exc)
        return results

    def _push_command(self, queue: str, batch: Sequence[OutgoingMessage]) -> tuple[Any, ...]:
        """The command that stores ``batch``: a plain ``RPUSH`` onto ``fresh`` when every
        message is ready at priority 0 (the wake-up tokens follow it, see
        :meth:`_send_push`), else the ``PUSH`` script (see :mod:`pashq_redis.scripts`)."""
        keys = self._key_list(queue)
        values = [_stored_value(m) for m in batch]
        # A list is twice as fast as a generator here (most batches have neither).
        if not any([m.delay > 0 or m.priority for m in batch]):  # noqa: C419
            return ("RPUSH", keys[_FRESH], *values)
        special: list[Any] = []
        for i, m in enumerate(batch):
            if m.delay > 0 or m.priority:
                special += (i, max(1, round(m.delay * 1000)) if m.delay > 0 else 0, m.priority)
        # EVAL, not EVALSHA: no NOSCRIPT to recover from part-way through a stream (the
        # server caches the compiled script by its hash).
        return (
            "EVAL",
            scripts.PUSH,
            len(keys),
            *keys,
            len(batch),
            len(special) // 3,
            *special,
            *values,
        )

    def _send_push(self, connection: Any, queue: str, batch: Sequence[OutgoingMessage]) -> int:
        """Write the commands that store ``batch``; how many replies they will get."""
        command = self._push_command(queue, batch)
        if command[0] == "EVAL":
            connection.send_packed_command(connection.pack_command(*command), check_health=False)
            return 1
        connection.send_packed_command(
            connection.pack_commands([command, *self._wake_commands(queue, len(batch))]),
            check_health=False,
        )
        return 3

    def _wake_commands(self, queue: str, count: int) -> tuple[tuple[Any, ...], ...]:
        """The commands that follow a plain push of ``count`` messages: ``min(count, 16)``
        wake-up tokens, and the list kept to its last 16."""
        wake = self._key_list(queue)[_WAKE]
        return (("RPUSH", wake, *_TOKENS[: min(count, 16)]), ("LTRIM", wake, -16, -1))

    def _push_streamed(
        self,
        client: redis.Redis,
        queue: str,
        source: Iterator[Sequence[OutgoingMessage]],
        taken: list[Sequence[OutgoingMessage]],
    ) -> tuple[list[Any], Any]:
        """Send each batch's command as soon as ``source`` yields it (``source`` appends
        it to ``taken`` first) and read the replies at the end, so that the server stores
        one batch while the next is built.

        Returns one reply per batch of ``taken`` (a :class:`ResponseError` for a batch the
        server refused; the others are stored), and the ``WAIT`` reply (``None`` without
        ``wait_replicas``). When the connection breaks, the batches whose replies were not
        read are sent once more on a fresh connection (a batch may then be stored twice,
        as with any retried push); when that breaks too, the error is raised.
        """
        pool = client.connection_pool
        results: list[Any] = []
        acked: Any = None
        for tries in (1, 2):
            # redis-py leaves the Connection methods untyped.
            connection: Any = pool.get_connection()
            replies: list[int] = []
            try:
                for batch in taken[len(results) :]:
                    replies.append(self._send_push(connection, queue, batch))
                for batch in source:
                    replies.append(self._send_push(connection, queue, batch))
                if self.options.wait_replicas and taken:
                    connection.send_packed_command(
                        connection.pack_command(
                            "WAIT",
                            self.options.wait_replicas,
                            round(self.options.wait_timeout * 1000),
                        ),
                        check_health=False,
                    )
                for count in replies:
                    try:
                        results.append(connection.read_response())
                    except ResponseError as exc:
                        results.append(exc)
                    for _ in range(count - 1):  # the wake-up tokens: a hint only
                        with suppress(ResponseError):
                            connection.read_response()
                if self.options.wait_replicas and taken:
                    try:
                        acked = connection.read_response()
                    except ResponseError as exc:
                        acked = exc
                return results, acked
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                connection.disconnect()
                if tries == 2 or len(results) == len(taken):
                    if not results:
                        raise RedisConnectionError(str(exc)) from exc
                    # The rest may or may not be stored: not confirmed.
                    return [*results, exc], exc
                log.info(
                    "redis push on queue %r: connection lost after %d of %d batch(es) were "
                    "confirmed (%s); sending the rest again on a fresh connection",
                    queue,
                    len(results),
                    len(taken),
                    exc,
                )
            finally:
                pool.release(connection)
        raise AssertionError("unreachable")  # pragma: no cover

    @hookimpl
    def pashq_push_unique(
        self,
        queue: str,
        messages: Sequence[OutgoingMessage],
        keys: Sequence[str | None],
        ttls: Sequence[float],
        options: Mapping[str, Any],
    ) -> list[str]:
        """Take each unique message's key and store the ones taken, in one script (on a
        cluster, where the keys live in other slots: take, push, give back on failure)."""
        _refuse_options(options)
        _check_ids(queue, messages)
        if self.options.cluster:
            return self._push_unique_in_steps(queue, messages, keys, ttls)
        client, found = self._use()
        hold_keys: list[bytes] = []
        args: list[Any] = [len(messages)]
        for m, key, ttl in zip(messages, keys, ttls, strict=True):
            index = 0
            if key is not None:
                hold_keys.append(coordination.hold_key(self.options.key_prefix, key))
                index = len(PARTS) + len(hold_keys)
            delay = max(1, round(m.delay * 1000)) if m.delay > 0 else 0
            value = _stored_value(m)
            args += [value, m.id, delay, m.priority, index, max(1, round(ttl * 1000))]
        with self._errors(
            "push",
            queue,
            f"; {len(messages)} message(s) may or may not be stored (a second dispatch may "
            "deliver them twice)",
        ):
            pipe = client.pipeline(transaction=False)
            found.push_unique(keys=[*self.keys(queue).all(), *hold_keys], args=args, client=pipe)
            if self.options.wait_replicas:
                pipe.wait(self.options.wait_replicas, round(self.options.wait_timeout * 1000))
            results = pipe.execute()
        answers = [a.decode("utf-8", "replace") for a in results[0]]
        if self.options.wait_replicas:
            self._check_replicas(queue, messages, results[-1])
        return answers

    def _push_unique_in_steps(
        self,
        queue: str,
        messages: Sequence[OutgoingMessage],
        keys: Sequence[str | None],
        ttls: Sequence[float],
    ) -> list[str]:
        answers: list[str] = []
        taken: list[tuple[OutgoingMessage, str]] = []
        to_push: list[OutgoingMessage] = []
        try:
            for m, key, ttl in zip(messages, keys, ttls, strict=True):
                if key is None:
                    to_push.append(m)
                    answers.append(m.id)
                    continue
                got = self.pashq_lock_acquire(key=key, owner=m.id, ttl=ttl, limit=1)
                if got.taken:
                    taken.append((m, key))
                    to_push.append(m)
                    answers.append(m.id)
                else:
                    answers.append(got.holder or "")
            if to_push:
                self.pashq_push(queue=queue, messages=to_push, options={})
        except PartialPushError as exc:
            stored = set(exc.stored)
            self._give_back([(m, k) for m, k in taken if m.id not in stored])
            raise
        except BaseException:
            self._give_back(taken)
            raise
        return answers

    def _give_back(self, taken: Sequence[tuple[OutgoingMessage, str]]) -> None:
        for m, key in taken:
            try:
                self.pashq_lock_release(key=key, owner=m.id)
            except DriverError:
                log.warning("could not release unique key %r of message %s", key, m.id)

    def _check_replicas(self, queue: str, messages: Sequence[OutgoingMessage], acked: Any) -> None:
        if isinstance(acked, Exception) or int(acked) < self.options.wait_replicas:
            raise DriverError(
                f"redis push on queue {queue!r}: the master stored {len(messages)} "
                f"message(s) ({_ids(messages)}) but only {acked} of "
                f"{self.options.wait_replicas} replica(s) acknowledged them within "
                f"{self.options.wait_timeout} s (wait_replicas); they may be lost on a "
                "failover, and a second dispatch may deliver them twice"
            )

    @hookimpl
    def pashq_pull(self, queue: str, max_messages: int, timeout: float) -> list[Delivery]:
        """Claim up to ``max_messages``; when none is ready, block on the wake-up list.

        After a full claim of at least :data:`_READ_AHEAD_MIN` the next claim starts in the
        background and the next pull of the queue is served from it (see
        :class:`_ReadAhead`).
        """
        client, found = self._use()
        lease = self.options.lease
        lease_ms = max(1, round(lease * 1000))
        limit = max(1, min(max_messages, self.options.batch_size))
        if self._ahead:
            served = self._from_ahead(queue, limit)
            if served:
                return served
        deadline = time.monotonic() + max(0.0, timeout)
        wake = self.keys(queue).key("wake")
        while True:
            with self._errors("pull", queue):
                reply = self._run(queue, found.pull, (limit, lease_ms))
            if len(reply) > 1:
                deliveries = self._deliveries(queue, reply, lease)
                if len(deliveries) >= limit >= _READ_AHEAD_MIN:
                    self._start_ahead(queue, limit)
                return deliveries
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed.is_set():
                return []
            # Each BLPOP ends well within socket_timeout, and soon enough to see a close.
            wait = min(remaining, _WAIT_SLICE, self.options.socket_timeout / 2)
            hint = int(reply[0])
            if hint >= 0:
                wait = min(wait, hint / 1000 + 0.002)
            try:
                client.blpop([wake], timeout=max(wait, _MIN_WAIT))
            except RedisError as exc:
                if self._closed.is_set():
                    return []
                raise DriverError(
                    f"redis pull on queue {queue!r} failed at {safe_url(self.options.url)} "
                    f"while waiting: {type(exc).__name__}: {exc}"
                ) from exc

    def _deliveries(self, queue: str, reply: list[Any], lease: float) -> list[Delivery]:
        # reply: hint, k, then number, stamp, b"<id>\0<envelope>" for k messages claimed
        # from ready, then number, b"<id>\0<envelope>" for those claimed from fresh.
        out: list[Delivery] = []
        append = out.append
        receipt = tuple.__new__  # Receipt(...) without NamedTuple's Python-level __new__
        first = _FIRST
        end = 2 + 3 * int(reply[1])
        parts = iter(reply[2:end])
        for number, stamp, value in zip(parts, parts, parts, strict=True):
            message_id, cut, body = value.partition(b"\0")
            if not cut:  # written by hand: all of it is the body
                message_id, body = b"", value
            append(
                Delivery(
                    queue,
                    message_id.decode("utf-8", "replace"),
                    body,
                    int(stamp) // 10 % 1_000_000,  # scripts.attempts_of, inlined
                    receipt(Receipt, (number, stamp)),
                    lease,
                )
            )
        # The same split as above, written out again: a helper call per delivery costs
        # the read-ahead thread (and so the worker, through the GIL) more than it saves.
        parts = iter(reply[end:])
        for number, value in zip(parts, parts, strict=True):
            message_id, cut, body = value.partition(b"\0")
            if not cut:  # written by hand: all of it is the body
                message_id, body = b"", value
            append(
                Delivery(
                    queue,
                    message_id.decode("utf-8", "replace"),
                    body,
                    1,
                    receipt(Receipt, (number, first)),
                    lease,
                )
            )
        return out

    # -- read-ahead -------------------------------------------------------------------------

    def _start_ahead(self, queue: str, limit: int) -> None:
        """Have the read-ahead thread claim the next ``limit`` of ``queue`` (redis-py waits
        for the reply without the GIL, so the server's work hides behind the worker's).

        One thread per driver and process, started once: starting a thread per claim
        costs the caller a GIL hand-over (milliseconds) each time.
        """
        record = _ReadAhead(limit, time.monotonic())
        with self._lock:
            if queue in self._ahead or self._closed.is_set():
                return
            self._ahead[queue] = record
            if self._ahead_thread is None:
                self._ahead_thread = threading.Thread(
                    target=self._ahead_loop,
                    args=(self._ahead_jobs,),
                    name=f"pashq-redis-read-ahead-{self.connection_name}",
                    daemon=True,
                )
                self._ahead_thread.start()
        # Send the claim from this thread, now: handing it to the read-ahead thread would
        # wait for that thread to get the GIL (up to the 5 ms switch interval). The thread
        # only reads the reply.
        client, found = self._client, self._scripts
        connection: Any = None
        sent: Any = None  # (pool, connection) the claim went out on
        if isinstance(client, redis.Redis) and found is not None and self._pid == os.getpid():
            try:
                connection = client.connection_pool.get_connection()
                keys = self._key_list(queue)
                lease_ms = max(1, round(self.options.lease * 1000))
                connection.send_packed_command(
                    connection.pack_command(
                        "EVALSHA", found.pull.sha, len(keys), *keys, limit, lease_ms
                    ),
                    check_health=False,
                )
                sent = (client.connection_pool, connection)
            except Exception as exc:  # the next pull claims in the foreground
                if connection is not None:
                    connection.disconnect()
                    client.connection_pool.release(connection)
                record.error = exc
                record.claimed.set()
                self._drop_ahead(queue, record)
                return
        self._ahead_jobs.put((queue, record, sent))

    def _ahead_loop(self, jobs: SimpleQueue[tuple[str, _ReadAhead, Any] | None]) -> None:
        """The read-ahead thread: claim what is asked, give back what waited too long."""
        waiting: list[tuple[str, _ReadAhead]] = []
        limit = self.options.lease * _READ_AHEAD_AGE
        while True:
            now = time.monotonic()
            kept = []
            for queue, record in waiting:
                if record.gone.is_set():
                    continue
                if now >= record.started + limit:
                    if self._drop_ahead(queue, record):
                        self._give_back_ahead(queue, record)
                else:
                    kept.append((queue, record))
            waiting = kept
            timeout = min((r.started + limit for _, r in waiting), default=now + 60.0) - now
            try:
                job = jobs.get(timeout=max(0.0, timeout))
            except Empty:
                continue
            if job is None:
                return
            queue, record, connection = job
            if self._claim_ahead(queue, record, connection):
                waiting.append((queue, record))

    def _claim_ahead(self, queue: str, record: _ReadAhead, connection: Any) -> bool:
        """Read the read-ahead claim's reply on ``connection`` (its pool and the pooled
        connection it was sent on; ``None`` on a cluster client: make the claim here);
        whether its deliveries now wait for a pull."""
        lease = self.options.lease
        try:
            if connection is None:
                _, found = self._use()
                reply = self._run(queue, found.pull, (record.limit, max(1, round(lease * 1000))))
            else:
                pool, sent = connection
                try:
                    reply = sent.read_response()
                finally:
                    pool.release(sent)
            if len(reply) > 1:
                record.deliveries = self._deliveries(queue, reply, lease)
        except Exception as exc:  # the next pull claims again in the foreground
            record.error = exc
        finally:
            record.claimed.set()
        with self._lock:
            mine = self._ahead.get(queue) is record
        if not mine:  # closed, or a pull gave up waiting for it: nobody will take these
            self._give_back_ahead(queue, record)
            return False
        if not record.deliveries:
            self._drop_ahead(queue, record)
            return False
        return True

    def _drop_ahead(self, queue: str, record: _ReadAhead) -> bool:
        """Take ``record`` out of the driver; whether it was still there (then its
        deliveries are the caller's)."""
        with self._lock:
            if self._ahead.get(queue) is not record:
                return False
            del self._ahead[queue]
            return True

    def _from_ahead(self, queue: str, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries of the read-ahead claim of ``queue`` (waiting for it
        if it is still on its way), or ``[]`` when there is none or it came too late."""
        record = self._ahead.get(queue)
        if record is None:
            return []
        record.claimed.wait(self.options.socket_timeout + 1)
        lease = self.options.lease
        served: list[Delivery] = []
        with self._lock:
            if self._ahead.get(queue) is not record:
                return []  # given back meanwhile (too old)
            age = time.monotonic() - record.started
            if age > lease * _READ_AHEAD_AGE or not record.deliveries:
                del self._ahead[queue]
                stale = True
            else:
                stale = False
                served = record.deliveries[:limit]
                del record.deliveries[:limit]
                if not record.deliveries:
                    del self._ahead[queue]
        if stale:
            record.gone.set()
            if record.error is not None:
                log.debug("redis read-ahead claim on queue %r failed: %s", queue, record.error)
            self._give_back_ahead(queue, record)
            return []
        if not record.deliveries:
            record.gone.set()
        # The lease started when the claim was sent: say what is left of it, so that the
        # worker's heartbeat extends it in time.
        left = lease - age
        for delivery in served:
            delivery.lease = left
        if len(served) == record.limit and record.limit >= _READ_AHEAD_MIN:
            self._start_ahead(queue, record.limit)
        return served

    def _give_back_ahead(self, queue: str, record: _ReadAhead) -> None:
        """Hand back the read-ahead deliveries nobody took, without counting the attempt
        (on failure their lease brings them back, counted)."""
        with self._lock:
            deliveries, record.deliveries = record.deliveries, []
            client, found = self._client, self._scripts
        record.gone.set()
        if not deliveries:
            return
        if client is None or found is None or self._pid != os.getpid():
            return
        try:
            for batch in _chunks(deliveries, self.options.batch_size):
                self._run(queue, found.defer, [0, *_fence(batch)], client=client)
        except RedisError as exc:
            log.warning(
                "redis: could not give back %d read-ahead message(s) on queue %r (%s); "
                "they come back when their lease ends",
                len(deliveries),
                queue,
                exc,
            )

    def _stale(
        self, what: str, queue: str, stale: list[bytes], deliveries: Sequence[Delivery]
    ) -> None:
        if not stale:
            return
        numbers = set(stale)
        lost = [d for d in deliveries if d.receipt.number in numbers]
        log.info(
            "redis: %s of %d message(s) on queue %r skipped: no longer held by this delivery "
            "(lease ran out; another worker may hold them): %s",
            what,
            len(lost),
            queue,
            _ids(lost),
        )

    @hookimpl
    def pashq_ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Delete the messages still held by these deliveries (one script per batch).

        The script calls are written to the socket and their replies read by the next
        ack, or before anything that reads the queue's state (stats, ``queue_empty``,
        purge, the dead letters, ``pashq_close``): the worker does not wait for the
        server. A reply that says the call failed has it made again at once, the usual
        way; if that fails too it is logged, and the messages come back when their lease
        ends (at-least-once). A call that cannot be sent is made the usual way, and
        raises :class:`~pashq.errors.DriverError` when that fails. On a cluster or through
        Sentinel each call is made and read in turn.
        """
        client, found = self._use()
        batches = list(_chunks(deliveries, self.options.batch_size))
        if not isinstance(client, redis.Redis) or self.options.sentinels:
            # A cluster, or Sentinel (whose failover may leave connections on two masters
            # for a moment: acks stay on the connection the pull just used): one call at
            # a time.
            for batch in batches:
                self._ack_now(queue, found, batch)
            return
        keys = self._key_list(queue)
        head = ("EVALSHA", found.ack.sha, len(keys), *keys)
        with self._ack_lock:
            acks = self._acks
            sent = len(acks.sent)
            try:
                if acks.connection is None:
                    acks.connection = client.connection_pool.make_connection()
                connection = acks.connection
                for batch in batches:
                    connection.send_packed_command(
                        connection.pack_command(*head, *_ack_args(batch)), check_health=False
                    )
                    acks.sent.append((queue, batch))
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.debug("redis ack on queue %r: not sent (%s); made the usual way", queue, exc)
                unsent = batches[len(acks.sent) - sent :]
                self._acks_lost(found, raise_errors=False)
                for batch in unsent:
                    self._ack_now(queue, found, batch)
                return
            self._read_acks(found, keep=len(acks.sent) - sent)

    def _ack_now(self, queue: str, found: _Scripts, batch: Sequence[Delivery]) -> None:
        with self._errors("ack", queue):
            stale = self._run(queue, found.ack, _ack_args(batch))
        self._stale("ack", queue, stale, batch)

    def _read_acks(self, found: _Scripts, keep: int) -> None:
        """Read the replies of the ack calls sent, but the last ``keep`` (under
        ``_ack_lock``)."""
        acks = self._acks
        while len(acks.sent) > keep:
            queue, batch = acks.sent[0]
            try:
                stale = acks.connection.read_response()
            except ResponseError as exc:
                del acks.sent[0]
                self._ack_again(queue, found, batch, exc)
                continue
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.debug("redis: ack replies lost (%s); acks made again the usual way", exc)
                self._acks_lost(found, raise_errors=keep > 0)
                return
            del acks.sent[0]
            self._stale("ack", queue, stale, batch)

    def _ack_again(
        self, queue: str, found: _Scripts, batch: Sequence[Delivery], why: BaseException
    ) -> None:
        """Make again an ack call whose streamed reply said it failed (NOSCRIPT after a
        server restart, for one); log when that fails too."""
        try:
            self._ack_now(queue, found, batch)
        except DriverError as exc:
            log.warning(
                "redis: ack of %d message(s) on queue %r failed (%s; then %s); they come "
                "back when their lease ends",
                len(batch),
                queue,
                why,
                exc,
            )

    def _acks_lost(self, found: _Scripts, raise_errors: bool) -> None:
        """The ack connection broke: drop it and make every unread ack call again the usual
        way (a settle made twice is harmless: the fence). With ``raise_errors`` the last
        failure raises (the caller's own acks are among them), else it is logged."""
        acks = self._acks
        pending, acks.sent = acks.sent, []
        if acks.connection is not None:
            acks.connection.disconnect()
        for index, (queue, batch) in enumerate(pending):
            if raise_errors and index == len(pending) - 1:
                self._ack_now(queue, found, batch)
            else:
                self._ack_again(queue, found, batch, RedisConnectionError("connection lost"))

    def _finish_acks(self, close: bool = False) -> None:
        """Read every ack reply still unread (before reading the queue's state); with
        ``close``, close the ack connection too."""
        if self._acks.sent and self._scripts is not None:
            with self._ack_lock:
                self._read_acks(self._scripts, keep=0)
        if close and self._acks.connection is not None:
            with self._ack_lock:
                self._acks.connection.disconnect()
                self._acks.connection = None

    @hookimpl
    def pashq_nack(self, queue: str, deliveries: Sequence[Delivery], delay: float) -> None:
        """Hand the messages back, ready again after ``delay`` seconds."""
        _, found = self._use()
        delay_ms = max(0, round(delay * 1000))
        for batch in _chunks(deliveries, self.options.batch_size):
            with self._errors("nack", queue):
                stale = self._run(queue, found.nack, [delay_ms, *_fence(batch)])
            self._stale("nack", queue, stale, batch)

    @hookimpl
    def pashq_defer(self, queue: str, deliveries: Sequence[Delivery], delay: float) -> None:
        """Hand the messages back after ``delay`` seconds without counting this delivery."""
        _, found = self._use()
        delay_ms = max(0, round(delay * 1000))
        for batch in _chunks(deliveries, self.options.batch_size):
            with self._errors("defer", queue):
                stale = self._run(queue, found.defer, [delay_ms, *_fence(batch)])
            self._stale("defer", queue, stale, batch)

    @hookimpl
    def pashq_extend(self, queue: str, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Move the lease deadlines to ``seconds`` from now (server time)."""
        _, found = self._use()
        ms = max(1, round(seconds * 1000))
        for batch in _chunks(deliveries, self.options.batch_size):
            with self._errors("lease extension", queue):
                stale = self._run(queue, found.extend, [ms, *_fence(batch)])
            self._stale("lease extension", queue, stale, batch)

    @hookimpl
    def pashq_dead_letter(
        self, queue: str, delivery: Delivery, reason: str, traceback: str | None
    ) -> None:
        """Move the message to the dead letters with its reason, in one script."""
        _, found = self._use()
        receipt: Receipt = delivery.receipt
        args = [
            receipt.number,
            receipt.stamp,
            delivery.id,
            safe_text(reason, REASON_LIMIT),
            safe_text(traceback, TRACEBACK_LIMIT, keep="tail") if traceback is not None else "",
            "1" if traceback is not None else "0",
        ]
        with self._errors("dead letter", queue):
            moved = self._run(queue, found.dead_letter, args)
        if not moved:
            self._stale("dead letter", queue, [receipt.number], [delivery])

    @hookimpl
    def pashq_queue_empty(self, queue: str) -> bool | None:
        """``True`` when nothing is deliverable now (one script; a read-ahead claim not
        yet served counts as deliverable)."""
        _, found = self._use()
        if queue in self._ahead:
            return False
        self._finish_acks()
        with self._errors("queue_empty", queue):
            return int(self._run(queue, found.ready_count, [])) == 0

    # -- inspection and administration --------------------------------------------------------

    @hookimpl
    def pashq_stats(self, queue: str) -> QueueStats:
        """Ready (due delays and ended leases included), delayed, in flight and failed."""
        _, found = self._use()
        self._finish_acks()
        with self._errors("stats", queue):
            ready, delayed, in_flight, failed = self._run(queue, found.stats, [])
        return QueueStats(queue, int(ready), int(delayed), int(in_flight), int(failed))

    @hookimpl
    def pashq_queues(self) -> list[str]:
        """The queues holding messages or dead letters: a ``body`` hash or a ``fresh`` list
        each (SCAN, on every primary of a cluster)."""
        client, _ = self._use()
        prefix = self.options.key_prefix
        names: set[str] = set()
        with self._errors("listing queues", "*"):
            for part in ("body", "fresh"):
                pattern = f"{_glob_escape(prefix)}{{*}}:{part}"
                end = f"}}:{part}"
                for raw in client.scan_iter(match=pattern, count=1000):
                    key = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
                    inner = key[len(prefix) :]
                    if inner.startswith("{") and inner.endswith(end):
                        names.add(inner[1 : -len(end)])
        return sorted(names)

    @hookimpl
    def pashq_purge(self, queue: str) -> int:
        """Delete ready, delayed and expired-lease messages, in chunks."""
        _, found = self._use()
        self._finish_acks()
        total = 0
        while True:
            with self._errors("purge", queue):
                n = int(self._run(queue, found.purge, [_PURGE_CHUNK]))
            total += n
            if n < _PURGE_CHUNK:
                return total

    @hookimpl
    def pashq_failed_list(self, queue: str, limit: int) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        _, found = self._use()
        self._finish_acks()
        if limit <= 0:
            return []
        with self._errors("failed list", queue):
            rows = self._run(queue, found.failed_list, [limit])
        out: list[DeadLetter] = []
        for i in range(0, len(rows), 6):
            _number, failed_ms, stamp, value, reason, trace = rows[i : i + 6]
            if value is None:
                continue  # purged meanwhile
            message_id, cut, body = value.partition(b"\0")
            if not cut:
                message_id, body = b"", value
            try:
                attempts = scripts.attempts_of(int(stamp))
            except (TypeError, ValueError):
                attempts = 0  # written by hand
            out.append(
                DeadLetter(
                    id=_text(message_id) or "",
                    queue=queue,
                    body=body,
                    reason=_text(reason) or "",
                    traceback=_text(trace),
                    attempts=attempts,
                    failed_at=datetime.fromtimestamp(int(float(failed_ms)) / 1000, UTC),
                )
            )
        return out

    def _select(self, ids: Sequence[str] | None) -> list[str]:
        return ["1"] if ids is None else ["0", *ids]

    @hookimpl
    def pashq_failed_retry(self, queue: str, ids: Sequence[str] | None) -> int:
        """Move dead letters back as fresh messages (attempts start again at 1)."""
        _, found = self._use()
        self._finish_acks()
        if ids is not None and not ids:
            return 0
        with self._errors("failed retry", queue):
            return int(self._run(queue, found.failed_retry, self._select(ids)))

    @hookimpl
    def pashq_failed_purge(self, queue: str, ids: Sequence[str] | None) -> int:
        """Delete dead letters."""
        _, found = self._use()
        self._finish_acks()
        if ids is not None and not ids:
            return 0
        with self._errors("failed purge", queue):
            return int(self._run(queue, found.failed_purge, self._select(ids)))

    # -- coordination (holds and sliding windows; see pashq_redis.coordination) -------------

    @contextmanager
    def _coordination_errors(self, what: str, key: str) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            raise DriverError(
                f"redis {what} of coordination key {key!r} failed at "
                f"{safe_url(self.options.url)}: {type(exc).__name__}: {exc}"
            ) from exc

    @hookimpl
    def pashq_lock_acquire(self, key: str, owner: str, ttl: float, limit: int) -> Acquired:
        """Take one of ``limit`` places on ``key`` for ``ttl`` s (one script, server clock)."""
        _, found = self._use()
        redis_key = coordination.hold_key(self.options.key_prefix, key)
        with self._coordination_errors("lock acquire", key):
            taken, holder, wait_ms = found.acquire(
                keys=[redis_key], args=[owner, max(1, round(ttl * 1000)), max(1, limit)]
            )
        holder_text = holder.decode("utf-8", "replace") if holder is not None else None
        if int(taken):
            return Acquired(True, owner, 0.0)
        return Acquired(False, holder_text, int(wait_ms) / 1000)

    @hookimpl
    def pashq_lock_release(self, key: str, owner: str) -> bool:
        """Drop ``owner``'s live hold on ``key``."""
        _, found = self._use()
        redis_key = coordination.hold_key(self.options.key_prefix, key)
        with self._coordination_errors("lock release", key):
            return bool(int(found.release(keys=[redis_key], args=[owner])))

    @hookimpl
    def pashq_lock_extend(self, key: str, owner: str, ttl: float) -> bool:
        """Make ``owner``'s live hold on ``key`` last ``ttl`` s from now."""
        _, found = self._use()
        redis_key = coordination.hold_key(self.options.key_prefix, key)
        with self._coordination_errors("lock extend", key):
            return bool(
                int(found.extend_hold(keys=[redis_key], args=[owner, max(1, round(ttl * 1000))]))
            )

    @hookimpl
    def pashq_window_add(self, key: str, limit: int, period: float) -> float:
        """Count one event on ``key`` unless ``limit`` were counted in the last ``period``."""
        _, found = self._use()
        redis_key = coordination.window_key(self.options.key_prefix, key)
        with self._coordination_errors("window add", key):
            wait_ms = found.window_add(
                keys=[redis_key], args=[max(1, limit), max(1, round(period * 1000))]
            )
        return int(wait_ms) / 1000

    # -- for tests and tools ----------------------------------------------------------------

    def delete_queue(self, queue: str) -> int:
        """Delete every key of ``queue`` (messages, dead letters, counters); returns how many
        keys existed."""
        client, _ = self._use()
        self._finish_acks()
        with self._errors("delete", queue):
            return int(client.delete(*self.keys(queue).all()))

    def redis(self) -> Client:
        """The redis-py client of this process (for tools and tests)."""
        return self._use()[0]


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN ``MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)

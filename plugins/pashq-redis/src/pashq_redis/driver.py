"""``redis``: queues in Redis sorted sets, moved by Lua scripts (redis-py, hiredis if present).

Features: persistent at-least-once delivery with a lease (a message whose worker dies comes
back after ``lease`` seconds, no sweeper process needed), lease extension, delays and retry
back-off in Redis (nothing is held in worker memory), priorities 0 to 9 (higher first,
FIFO within one), dead letters with reason, traceback, attempts and time (list / retry /
purge), stats, purge, batched push, claim and ack (one script call per ``batch_size``),
idle workers blocked on the server (``BLPOP`` on a wake-up list, woken within
milliseconds of a push), Sentinel failover, Redis Cluster (each queue's keys share a hash
tag), ``WAIT`` for replicas; a coordination store (holds and sliding windows for unique
messages, rate limits, concurrency caps and schedules, see
:mod:`pashq_redis.coordination`) and ``pashq_defer``.

Design (see :mod:`pashq_redis.scripts`): each queue is a few keys ``<prefix>{<queue>}:*``;
a message is a number with its bytes and ``attempts:claims:priority:id`` in two hashes, and sits
in exactly one of the sorted sets ``ready`` (by priority, then push order), ``delayed``
(by due time), ``leased`` (by lease deadline) or ``failed``. Every change is one Lua
script, atomic on the server and timed by the server's ``TIME``. A pull first moves due
delays and ended leases back to ``ready``, then claims. Settles are fenced: they apply
only while the message is still leased with the claim count the delivery was pulled with.

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
and the worker backs off. Safe across ``os.fork``: a child opens its own pool.

Limits: a queue name may not contain ``{`` or ``}`` (the hash tag). Dead-letter retry and
purge by id read every dead letter of the queue in one script (fine for thousands).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import attrs
import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisError

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
from pashq_redis.keys import QueueKeys, queue_name_problem
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
#: Clients a forked child inherited: kept for ever, so that the child never closes the
#: parent's sockets (garbage collection would).
_INHERITED: list[Any] = []
#: Every driver, to give each a fresh lock in a child right after ``os.fork`` (a lock held
#: by another thread at the fork would stay locked in the child for ever).
_DRIVERS: weakref.WeakSet[RedisDriver] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for driver in list(_DRIVERS):
        driver._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

Client = redis.Redis | RedisCluster


@attrs.frozen
class Receipt:
    """A delivery's handle: the message's number in its queue and the claim it was pulled
    with (the fence: settles apply only while both still match)."""

    number: str
    claim: int


def _ids(deliveries: Sequence[Any]) -> str:
    shown = ", ".join(d.id for d in deliveries[:5])
    return shown + (f" and {len(deliveries) - 5} more" if len(deliveries) > 5 else "")


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _fence(deliveries: Sequence[Delivery]) -> list[str | int]:
    args: list[str | int] = []
    for delivery in deliveries:
        receipt: Receipt = delivery.receipt
        args += [receipt.number, receipt.claim]
    return args


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
        """Close the pool (a waiting pull returns at once)."""
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

    def _run(self, queue: str, script: Script, args: Sequence[Any], client: Any = None) -> Any:
        return script(keys=self.keys(queue).all(), args=list(args), client=client)

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
        """Store the messages, one script call per ``batch_size``, all in one pipeline."""
        if options:
            raise TypeError(
                f"redis driver: unknown dispatch option(s) {', '.join(sorted(options))}; "
                "it accepts none"
            )
        if not messages:
            return []
        client, found = self._use()
        batches = list(_chunks(messages, self.options.batch_size))
        with self._errors(
            "push",
            queue,
            f"; {len(messages)} message(s) may or may not be stored (a second dispatch may "
            "deliver them twice)",
        ):
            if self.options.cluster:
                # A cluster pipeline refuses scripts: one call per batch, in order.
                results = []
                for batch in batches:
                    try:
                        results.append(self._run(queue, found.push, self._push_args(batch)))
                    except RedisError as exc:
                        results.append(exc)
                        break
            else:
                pipe = client.pipeline(transaction=False)
                for batch in batches:
                    self._run(queue, found.push, self._push_args(batch), client=pipe)
                if self.options.wait_replicas:
                    pipe.wait(self.options.wait_replicas, round(self.options.wait_timeout * 1000))
                results = pipe.execute(raise_on_error=False)
        stored: list[str] = []
        problems: list[str] = []
        for batch, result in zip(batches, results, strict=False):
            if isinstance(result, BaseException):
                problems.append(f"{type(result).__name__}: {result}")
            else:
                stored += [m.id for m in batch]
        if problems:
            done = set(stored)
            not_stored = [m.id for m in messages if m.id not in done]
            text = (
                f"redis push on queue {queue!r}: {len(not_stored)} message(s) not stored "
                f"({problems[0]})"
            )
            if stored:
                raise PartialPushError(text, stored=stored, not_stored=not_stored)
            raise DriverError(text)
        if self.options.wait_replicas:
            self._check_replicas(queue, messages, results[-1])
        return [m.id for m in messages]

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
        if options:
            raise TypeError(
                f"redis driver: unknown dispatch option(s) {', '.join(sorted(options))}; "
                "it accepts none"
            )
        if self.options.cluster:
            return self._push_unique_in_steps(queue, messages, keys, ttls)
        client, found = self._use()
        hold_keys: list[bytes] = []
        args: list[Any] = [len(messages)]
        for m, key, ttl in zip(messages, keys, ttls, strict=True):
            index = 0
            if key is not None:
                hold_keys.append(coordination.hold_key(self.options.key_prefix, key))
                index = 10 + len(hold_keys)
            delay = max(1, round(m.delay * 1000)) if m.delay > 0 else 0
            args += [m.id, m.body, delay, m.priority, index, max(1, round(ttl * 1000))]
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

    def _push_args(self, batch: Sequence[OutgoingMessage]) -> list[Any]:
        args: list[Any] = [len(batch)]
        for m in batch:
            delay = max(1, round(m.delay * 1000)) if m.delay > 0 else 0
            args += [m.id, m.body, delay, m.priority]
        return args

    @hookimpl
    def pashq_pull(self, queue: str, max_messages: int, timeout: float) -> list[Delivery]:
        """Claim up to ``max_messages``; when none is ready, block on the wake-up list."""
        client, found = self._use()
        lease_ms = max(1, round(self.options.lease * 1000))
        limit = max(1, min(max_messages, self.options.batch_size))
        deadline = time.monotonic() + max(0.0, timeout)
        wake = self.keys(queue).key("wake")
        while True:
            with self._errors("pull", queue):
                reply = self._run(queue, found.pull, [limit, lease_ms])
            if len(reply) > 1:
                return self._deliveries(queue, reply)
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

    def _deliveries(self, queue: str, reply: list[Any]) -> list[Delivery]:
        lease = self.options.lease
        out: list[Delivery] = []
        for i in range(1, len(reply), 5):
            number = reply[i].decode()
            attempts, claim = int(reply[i + 1]), int(reply[i + 2])
            message_id = reply[i + 3].decode("utf-8", "replace")
            out.append(
                Delivery(queue, message_id, reply[i + 4], attempts, Receipt(number, claim), lease)
            )
        return out

    def _stale(
        self, what: str, queue: str, stale: list[bytes], deliveries: Sequence[Delivery]
    ) -> None:
        if not stale:
            return
        numbers = {s.decode() for s in stale}
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
        """Delete the messages still held by these deliveries (one script per batch)."""
        _, found = self._use()
        for batch in _chunks(deliveries, self.options.batch_size):
            with self._errors("ack", queue):
                stale = self._run(queue, found.ack, _fence(batch))
            self._stale("ack", queue, stale, batch)

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
            receipt.claim,
            delivery.id,
            safe_text(reason, REASON_LIMIT),
            safe_text(traceback, TRACEBACK_LIMIT, keep="tail") if traceback is not None else "",
            "1" if traceback is not None else "0",
        ]
        with self._errors("dead letter", queue):
            moved = self._run(queue, found.dead_letter, args)
        if not moved:
            self._stale("dead letter", queue, [receipt.number.encode()], [delivery])

    @hookimpl
    def pashq_queue_empty(self, queue: str) -> bool | None:
        """``True`` when nothing is deliverable now (one script)."""
        _, found = self._use()
        with self._errors("queue_empty", queue):
            return int(self._run(queue, found.ready_count, [])) == 0

    # -- inspection and administration --------------------------------------------------------

    @hookimpl
    def pashq_stats(self, queue: str) -> QueueStats:
        """Ready (due delays and ended leases included), delayed, in flight and failed."""
        _, found = self._use()
        with self._errors("stats", queue):
            ready, delayed, in_flight, failed = self._run(queue, found.stats, [])
        return QueueStats(queue, int(ready), int(delayed), int(in_flight), int(failed))

    @hookimpl
    def pashq_queues(self) -> list[str]:
        """The queues holding messages or dead letters: one ``meta`` hash each (SCAN, on
        every primary of a cluster)."""
        client, _ = self._use()
        prefix = self.options.key_prefix
        pattern = f"{_glob_escape(prefix)}{{*}}:meta"
        names: set[str] = set()
        with self._errors("listing queues", "*"):
            for raw in client.scan_iter(match=pattern, count=1000):
                key = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
                inner = key[len(prefix) :]
                if inner.startswith("{") and inner.endswith("}:meta"):
                    names.add(inner[1 : -len("}:meta")])
        return sorted(names)

    @hookimpl
    def pashq_purge(self, queue: str) -> int:
        """Delete ready, delayed and expired-lease messages, in chunks."""
        _, found = self._use()
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
        if limit <= 0:
            return []
        with self._errors("failed list", queue):
            rows = self._run(queue, found.failed_list, [limit])
        out: list[DeadLetter] = []
        for i in range(0, len(rows), 6):
            _number, failed_ms, meta, body, reason, trace = rows[i : i + 6]
            if meta is None or body is None:
                continue  # purged meanwhile
            attempts, _claims, _priority, message_id = meta.decode("utf-8", "replace").split(":", 3)
            out.append(
                DeadLetter(
                    id=message_id,
                    queue=queue,
                    body=body,
                    reason=_text(reason) or "",
                    traceback=_text(trace),
                    attempts=int(attempts),
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
        if ids is not None and not ids:
            return 0
        with self._errors("failed retry", queue):
            return int(self._run(queue, found.failed_retry, self._select(ids)))

    @hookimpl
    def pashq_failed_purge(self, queue: str, ids: Sequence[str] | None) -> int:
        """Delete dead letters."""
        _, found = self._use()
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
        with self._errors("delete", queue):
            return int(client.delete(*self.keys(queue).all()))

    def redis(self) -> Client:
        """The redis-py client of this process (for tools and tests)."""
        return self._use()[0]


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN ``MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)

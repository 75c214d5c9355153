"""``rabbitmq``: the RabbitMQ driver, on pika.

Features
    Durable queues (classic or quorum) and persistent messages; publisher confirms on by
    default and pipelined (a ``dispatch_many`` publishes its whole batch, up to
    ``max_in_flight`` unconfirmed at once, and waits once); consumers with ``prefetch`` and
    acks batched with ``multiple=True``; heartbeats that keep flowing while handlers run
    (one I/O thread per connection owns the pika connection); delayed dispatch and retry
    backoff held by the broker in per-delay TTL queues; dead letters in ``<queue>.failed``
    (listed, retried, purged); automatic reconnection with backoff after a broker restart;
    ``stats`` (ready and failed counts) and ``purge``; priorities on classic queues
    (``x-max-priority`` on the work queues the driver declares, the AMQP ``priority``
    property on each message; a retry or dead letter keeps it); for ``pashq move``, moved
    messages keep their attempts (``x-pashq-attempts``) and moved dead letters their
    reasons (delayed messages wait in their delay queues: a move takes them once due).

Options (``[queues.<name>]``)
    - ``url`` (default ``amqp://guest:guest@127.0.0.1:5672/%2F``): ``amqp://`` or
      ``amqps://``, with the vhost URL-encoded in the path; pika's query options
      (``?ssl_options=...&connection_attempts=...``) are accepted.
    - ``prefetch`` (100): unacked deliveries the broker sends ahead to each consumer.
    - ``confirm`` (true): wait for publisher confirms; ``false`` trades safety for speed.
    - ``queue_type`` (``"classic"``): or ``"quorum"`` (replicated; its ``x-delivery-count``
      also counts redeliveries after crashes exactly).
    - ``declare`` (``"auto"``): declare queues as needed; ``"passive"`` only checks that the
      work queue (and, when dead-lettering, ``<queue>.failed``) exists, for brokers where
      the application may not configure; it still declares the delay queues delays need.
    - ``heartbeat`` (server's, 60 s): AMQP heartbeat in seconds, 0 = off.
    - ``publish_timeout`` (30 s): how long a push may wait for confirms, including waiting
      for a reconnection; past it the push raises :class:`~pashq.errors.DriverError`
      naming the unconfirmed ids.
    - ``reconnect_delay_max`` (5 s): the longest pause between reconnection attempts.
    - ``max_in_flight`` (10000): unconfirmed publishes per connection (a larger window
      hides the broker's fsync latency; a lost connection republishes at most this many).
    - ``management_url`` (none): the management API (``http://host:15672``); with it,
      ``stats`` also reports unacknowledged (in-flight) messages. AMQP alone gives only
      the ready count.
    - ``max_priority`` (9): the ``x-max-priority`` argument of the classic work queues the
      driver declares; 0 declares them without it (and ``dispatch(priority=)`` above 0 is
      refused, as on quorum queues, which RabbitMQ 3.x gives no priorities). A queue
      declared before without the argument makes RabbitMQ refuse the declare with
      ``PRECONDITION_FAILED``: the error says to delete (or drain and move) the queue, or
      to set ``max_priority = 0``.

Guarantees
    At-least-once. A push returns only when the broker confirmed every message (a nack, an
    unroutable return or a timeout raises ``DriverError`` naming the ids). A delivery is
    acked after ``process_message`` returns; a worker that dies leaves its deliveries
    unacked and the broker redelivers them when the connection closes (no lease: crash
    recovery is immediate). A retry or dead letter is a confirmed publish of a copy
    followed by the ack of the original, so a crash between the two can duplicate but
    never lose; a copy that is not confirmed (refused, not encodable, timed out) leaves the
    original requeued and the hook raises. Everything written into a copy is encodable
    (safe text, short strings within 255 bytes). Delivery attempts travel in the
    ``x-pashq-attempts`` header (plus one for a broker redelivery). A publish the broker
    refuses by closing the channel fails at once (``MessageTooLargeError`` for the size);
    a partly stored batch raises ``PartialPushError``.

Queue names
    At most 238 bytes of UTF-8 (``<queue>.delay.<ms>`` must fit AMQP's 255), encodable,
    not starting with ``amq.`` (``pashq_check_queue_name``).

Fork
    A forked child opens its own connection on first use, with fresh locks; the parent's
    socket is never used or closed in the child.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import pika
import pika.exceptions

from pashq.capabilities import Capabilities
from pashq.config import parse_options
from pashq.connection import Connection
from pashq.delivery import DeadLetter, Delivery, MovedMessage, OutgoingMessage, QueueStats
from pashq.errors import (
    ConfigError,
    DriverError,
    MessageTooLargeError,
    PartialPushError,
    QueueNotFoundError,
)
from pashq.hookspecs import hookimpl
from pashq_rabbitmq.link import BrokerLink, Publish, Receipt
from pashq_rabbitmq.management import queue_counts, queue_names
from pashq_rabbitmq.options import RabbitMQOptions, display_url
from pashq_rabbitmq.properties import (
    ATTEMPTS_HEADER,
    FAILED_AT_HEADER,
    REASON_HEADER,
    TRACEBACK_HEADER,
    copy_properties,
    failed_at_of,
    failure_headers,
    message_id_of,
    new_properties,
    text_header,
    utc_text,
)
from pashq_rabbitmq.topology import (
    MAX_DELAY,
    delay_arguments,
    delay_milliseconds,
    delay_queue,
    expiry_refresh_seconds,
    failed_queue,
    has_priorities,
    queue_arguments,
    queue_name_problem,
    work_queue_arguments,
)

__all__ = ["RabbitMQDriver"]

log = logging.getLogger(__name__)

#: RabbitMQ's default ``max_message_size`` (128 MiB).
MAX_MESSAGE_BYTES = 128 * 1024 * 1024
#: How long an empty pull waits for messages the broker reports ready but has not sent yet.
_READY_WAIT = 5.0
#: How long an empty pull waits for deliveries already on their way when none are ready.
_IN_TRANSIT_WAIT = 0.1
_ATTACH_WAIT = 10.0

#: Every driver object, so that a forked child can give each one fresh locks.
_drivers: weakref.WeakSet[RabbitMQDriver] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Another thread of the parent may have held a driver's lock at the fork: in the child
    # that thread is gone and the lock would stay held forever. Nothing it guarded is used
    # in the child (the link property opens a fresh connection), so new locks are safe.
    for driver in list(_drivers):
        driver._lock = threading.RLock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RabbitMQDriver:
    """RabbitMQ through pika (see the module docstring for options and guarantees)."""

    name = "rabbitmq"
    capabilities = Capabilities(
        persistent=True,
        delay=True,
        max_delay=MAX_DELAY,
        batch_size=100,
        nack_delay=True,
        lease=False,
        extend_lease=False,
        dead_letters=True,
        stats=True,
        purge=True,
        list_queues=True,  # with management_url only: pashq_queues answers None without it
        store_attempts=True,
        store_dead_letters=True,
        priorities=True,
    )

    def __init__(self) -> None:
        self.options = RabbitMQOptions()
        self._link: BrokerLink | None = None
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._declared: dict[str, tuple[int, float]] = {}
        self._attached: set[str] = set()
        #: Every queue this driver declared (tests delete them; delay queues also expire).
        self.declared_queues: set[str] = set()
        _drivers.add(self)

    # -- lifecycle -----------------------------------------------------------------------

    @hookimpl
    def pashq_connect(self, connection: Connection) -> None:
        """Validate the options and start the I/O thread (it connects in the background)."""
        options = parse_options(RabbitMQOptions, connection.options, connection.where)
        try:
            parameters = pika.URLParameters(options.url)
        except Exception as exc:
            raise ConfigError(
                f"{connection.where}: 'url' {display_url(options.url)!r} is not a valid AMQP "
                f"URL: {type(exc).__name__}"
            ) from None
        if options.heartbeat is not None:
            parameters.heartbeat = options.heartbeat
        self.options = options
        if not has_priorities(options.queue_type, options.max_priority):
            # Quorum queues (RabbitMQ 3.x) and max_priority = 0: the core refuses priority=.
            connection.capabilities = attrs.evolve(connection.capabilities, priorities=False)
        self.where = display_url(options.url)
        self._parameters = parameters
        self._link = self._open_link()

    def _open_link(self) -> BrokerLink:
        options = self.options
        link = BrokerLink(
            self._parameters,
            where=self.where,
            prefetch=options.prefetch,
            confirm=options.confirm,
            max_in_flight=options.max_in_flight,
            reconnect_delay_max=options.reconnect_delay_max,
            consume_declare=self._consume_declare,
        )
        self._pid = os.getpid()
        link.start()
        return link

    @hookimpl
    def pashq_close(self) -> None:
        """Close the connection; unacked deliveries go back to their queues.

        In a forked child, a link inherited from the parent is left alone: its socket and
        I/O thread belong to the parent.
        """
        if self._link is not None and self._link.pid == os.getpid():
            self._link.close()

    @property
    def link(self) -> BrokerLink:
        """The I/O thread of this connection."""
        if self._link is None:
            raise DriverError("the rabbitmq driver is not connected (pashq_connect not called)")
        if self._pid != os.getpid():
            # Forked (e.g. a pre-loading web server): the I/O thread stayed in the parent.
            # Open a connection of our own; the parent's socket is left to the parent.
            with self._lock:
                if self._pid != os.getpid():
                    self._declared.clear()
                    self._attached.clear()
                    self._link = self._open_link()
        return self._link

    def __repr__(self) -> str:
        return f"<RabbitMQDriver {getattr(self, 'where', 'unconnected')}>"

    # -- declaring -----------------------------------------------------------------------

    @hookimpl
    def pashq_check_queue_name(self, queue: str) -> str | None:
        """Refuse names RabbitMQ would refuse: over 238 bytes of UTF-8 (so that
        ``<queue>.delay.<ms>`` fits AMQP's 255), not encodable, or starting with ``amq.``."""
        return queue_name_problem(queue)

    def _consume_declare(self, queue: str) -> tuple[str, Any]:
        return self.options.declare, self._work_arguments()

    def _work_arguments(self) -> dict[str, Any] | None:
        return work_queue_arguments(self.options.queue_type, self.options.max_priority)

    def _fresh(self, name: str, max_age: float | None = None) -> bool:
        with self._lock:
            found = self._declared.get(name)
        if found is None or found[0] != self.link.connections:
            return False
        return max_age is None or time.monotonic() - found[1] < max_age

    def _remember(self, name: str) -> None:
        with self._lock:
            self._declared[name] = (self.link.connections, time.monotonic())
            self.declared_queues.add(name)

    def _forget(self, names: set[str]) -> None:
        with self._lock:
            for name in names:
                self._declared.pop(name, None)

    def _ensure(self, queue: str) -> None:
        """Declare (or, passive, check) the work queue and its failed queue, once."""
        if self._fresh(queue):
            return
        timeout = self.options.publish_timeout
        passive = self.options.declare == "passive"
        self.link.declare(queue, self._work_arguments(), passive=passive, timeout=timeout)
        if not passive:
            arguments = queue_arguments(self.options.queue_type)
            self.link.declare(failed_queue(queue), arguments, passive=False, timeout=timeout)
        self._remember(queue)

    def _ensure_failed(self, queue: str) -> None:
        name = failed_queue(queue)
        if self._fresh(name):
            return
        self._ensure(queue)
        if self.options.declare == "passive":
            self.link.declare(name, None, passive=True, timeout=self.options.publish_timeout)
        self._remember(name)

    def _ensure_delay(self, queue: str, ms: int) -> str:
        name = delay_queue(queue, ms)
        if not self._fresh(name, expiry_refresh_seconds()):
            self.link.declare(
                name,
                delay_arguments(queue, ms),
                passive=False,
                timeout=self.options.publish_timeout,
            )
            self._remember(name)
        return name

    @hookimpl
    def pashq_declare(self, queue: str) -> None:
        """Declare ``queue`` and ``queue.failed`` (or check them, in passive mode)."""
        self._ensure(queue)

    # -- publishing ----------------------------------------------------------------------

    @hookimpl
    def pashq_push(
        self, queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        """Publish the batch (persistent, confirmed) and return once all are confirmed."""
        if options:
            raise TypeError(f"rabbitmq driver takes no dispatch options, got {sorted(options)}")
        self._ensure(queue)
        items: list[Publish] = []
        # The broker's own limit once it refused a message for its size, else the default.
        limit = self.link.max_message_size or MAX_MESSAGE_BYTES
        for m in messages:
            body = m.body
            if len(body) > limit:
                raise MessageTooLargeError(
                    f"message {m.id} for queue {queue!r} is {len(body)} bytes; RabbitMQ "
                    f"accepts at most {limit} (max_message_size); nothing of this batch "
                    "was published"
                )
            target = queue
            if m.delay > 0:
                ms = delay_milliseconds(m.delay)
                if ms:
                    target = self._ensure_delay(queue, ms)
            properties = new_properties(m.id, m.type_name, body, m.priority)
            items.append(Publish(target, body, properties, m.id))
        try:
            self.link.publish(
                items,
                timeout=self.options.publish_timeout,
                what=f"publishing {len(items)} message(s) to queue {queue!r}",
            )
        except DriverError:
            # The queue may have been deleted behind our back: declare it again next time.
            self._forget({queue} | {p.routing_key for p in items})
            raise
        return [m.id for m in messages]

    # -- consuming -----------------------------------------------------------------------

    @hookimpl
    def pashq_pull(self, queue: str, max_messages: int, timeout: float) -> list[Delivery]:
        """Take buffered deliveries of the queue's consumer (started on the first pull)."""
        link = self.link
        if not link.consuming(queue):
            first = queue not in self._attached
            link.consume(queue, timeout=max(timeout, _ATTACH_WAIT if first else 1.0))
            self._attached.add(queue)
        # Take at most half the prefetch window: while the worker processes these, the
        # broker refills the other half as soon as their acks arrive, so it never stalls.
        max_messages = min(max_messages, max(1, self.options.prefetch // 2))
        got = link.take(queue, max_messages, timeout)
        if got:
            return got
        if not link.consuming(queue):
            raise DriverError(f"no consumer attached to queue {queue!r}: {link.status()}")
        # Empty: make sure the queue is empty on the broker too, not just slow to send.
        try:
            ready = link.declare(queue, None, passive=True, timeout=self.options.publish_timeout)
        except QueueNotFoundError:
            raise
        except DriverError:
            return []
        wait = _IN_TRANSIT_WAIT
        if ready and link.unacked() < self.options.prefetch:
            wait = _READY_WAIT
        return link.take(queue, max_messages, wait)

    def _current(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        epoch = self.link.epoch
        current = [d for d in deliveries if d.receipt.epoch == epoch]
        if len(current) < len(deliveries):
            log.info(
                "%d delivery(ies) came from a lost channel: the broker redelivers them",
                len(deliveries) - len(current),
            )
        return current

    @hookimpl
    def pashq_ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Ack (batched with multiple=True where possible); stale deliveries are dropped."""
        self.link.ack([d.receipt for d in deliveries])

    def _copy(self, delivery: Delivery, routing_key: str, headers: dict[str, Any]) -> Publish:
        # The delivery's id is the envelope's (the worker sets it so after decoding); the
        # message_id property of the copy repeats it when AMQP can carry it.
        old = delivery.receipt.properties
        message_id = delivery.id or old.message_id or ""
        properties = copy_properties(old, message_id, headers)
        label = message_id or properties.message_id or "<no id>"
        return Publish(routing_key, delivery.body, properties, label)

    def _move(
        self, queue: str, deliveries: Sequence[Delivery], copies: list[Publish], what: str
    ) -> None:
        """Publish the copies; ack an original only once its copy is confirmed.

        An original whose copy failed is requeued (it comes back, marked redelivered) and
        the error is raised, so the worker counts it as an error, not a retry.
        """
        receipts: list[Receipt] = [d.receipt for d in deliveries]
        try:
            self.link.publish(copies, timeout=self.options.publish_timeout, what=what)
        except PartialPushError as exc:
            stored = set(exc.stored) - set(exc.not_stored)
            moved = [r for r, c in zip(receipts, copies, strict=True) if c.message_id in stored]
            self.link.ack(moved)
            self.link.requeue([r for r in receipts if r not in moved])
            raise
        except DriverError:
            self.link.requeue(receipts)
            raise
        self.link.ack(receipts)

    @hookimpl
    def pashq_nack(self, queue: str, deliveries: Sequence[Delivery], delay: float) -> None:
        """Publish copies with one more attempt (to a delay queue if ``delay``), then ack."""
        current = self._current(deliveries)
        if not current:
            return
        self._ensure(queue)
        ms = delay_milliseconds(delay) if delay > 0 else 0
        target = self._ensure_delay(queue, ms) if ms else queue
        copies = [self._copy(d, target, {ATTEMPTS_HEADER: d.attempts}) for d in current]
        self._move(
            queue,
            current,
            copies,
            f"releasing {len(copies)} message(s) of queue {queue!r} (delay {delay:g}s)",
        )

    @hookimpl
    def pashq_dead_letter(
        self, queue: str, delivery: Delivery, reason: str, traceback: str | None
    ) -> None:
        """Publish a copy to ``<queue>.failed`` with the reason, then ack the original."""
        current = self._current([delivery])
        if not current:
            return
        self._ensure_failed(queue)
        headers = failure_headers(delivery.attempts, reason, traceback)
        copy = self._copy(delivery, failed_queue(queue), headers)
        self._move(
            queue, current, [copy], f"dead-lettering message {delivery.id} of queue {queue!r}"
        )

    # -- inspection ----------------------------------------------------------------------

    @hookimpl
    def pashq_stats(self, queue: str) -> QueueStats:
        """Ready messages of the queue and its failed queue (passive declares); with
        ``management_url``, ready and unacknowledged counts from the management API."""
        timeout = self.options.publish_timeout
        in_flight: int | None = None
        if self.options.management_url is not None:
            counts = queue_counts(self.options.management_url, self.options.url, queue, timeout)
            ready, in_flight = counts.ready, counts.unacknowledged
        else:
            ready = self.link.declare(queue, None, passive=True, timeout=timeout)
        try:
            failed: int | None = self.link.declare(
                failed_queue(queue), None, passive=True, timeout=timeout
            )
        except QueueNotFoundError:
            failed = None
        return QueueStats(queue, ready=ready, delayed=None, in_flight=in_flight, failed=failed)

    @hookimpl
    def pashq_queues(self) -> list[str] | None:
        """The vhost's queues from the management API, ``<queue>.failed`` and
        ``<queue>.delay.<ms>`` folded into ``<queue>``; ``None`` without ``management_url``
        (AMQP cannot list queues)."""
        if self.options.management_url is None:
            return None
        names = queue_names(
            self.options.management_url, self.options.url, self.options.publish_timeout
        )
        found = set()
        for name in names:
            if name.startswith("amq."):
                continue  # server-named (exclusive reply queues and the like)
            base, dot, last = name.rpartition(".")
            if dot and last == "failed":
                name = base
            else:
                head, dot, middle = base.rpartition(".")
                if dot and middle == "delay" and last.isdigit():
                    name = head
            found.add(name)
        return sorted(found)

    @hookimpl
    def pashq_purge(self, queue: str) -> int:
        """Purge the ready messages of the queue (delayed and unacked ones are kept)."""
        return self.link.purge(queue, timeout=self.options.publish_timeout)

    # -- dead letters --------------------------------------------------------------------

    def _dead_letter(self, queue: str, properties: Any, body: bytes) -> DeadLetter:
        headers = properties.headers or {}
        attempts = headers.get(ATTEMPTS_HEADER)
        return DeadLetter(
            id=message_id_of(properties, body),
            queue=queue,
            body=body,
            reason=text_header(headers, REASON_HEADER) or "dead-lettered by the broker",
            traceback=text_header(headers, TRACEBACK_HEADER),
            attempts=int(attempts) if isinstance(attempts, int) else 0,
            failed_at=failed_at_of(headers),
        )

    @hookimpl
    def pashq_failed_list(self, queue: str, limit: int) -> list[DeadLetter]:
        """Read up to ``limit`` dead letters without removing them."""
        timeout = self.options.publish_timeout
        try:
            browsed = self.link.browse(failed_queue(queue), limit, timeout=timeout)
        except QueueNotFoundError:
            return []
        try:
            return [self._dead_letter(queue, p, b) for _, p, b in browsed.messages]
        finally:
            self.link.release_browsed(browsed, (), timeout)

    @hookimpl
    def pashq_failed_retry(self, queue: str, ids: Sequence[str] | None) -> int:
        """Publish the chosen dead letters back to ``queue`` (fresh attempts), then ack them."""
        timeout = self.options.publish_timeout
        try:
            browsed = self.link.browse(failed_queue(queue), None, timeout=timeout)
        except QueueNotFoundError:
            return 0
        wanted = None if ids is None else set(ids)
        chosen: list[int] = []
        copies: list[Publish] = []
        try:
            for tag, properties, body in browsed.messages:
                message_id = message_id_of(properties, body)
                if wanted is not None and message_id not in wanted:
                    continue
                fake = Delivery(queue, message_id, body, 0, Receipt(0, tag, properties))
                copies.append(self._copy(fake, queue, {}))
                chosen.append(tag)
            if copies:
                self._ensure(queue)
                self.link.publish(
                    copies,
                    timeout=timeout,
                    what=f"retrying {len(copies)} dead letter(s) of {queue!r}",
                )
        except PartialPushError as exc:
            # Remove the dead letters whose copy is stored; the others stay dead letters.
            stored = set(exc.stored) - set(exc.not_stored)
            moved = [t for t, c in zip(chosen, copies, strict=True) if c.message_id in stored]
            self.link.release_browsed(browsed, moved, timeout)
            raise
        except BaseException:
            self.link.release_browsed(browsed, (), timeout)
            raise
        self.link.release_browsed(browsed, chosen, timeout)
        return len(chosen)

    @hookimpl
    def pashq_failed_purge(self, queue: str, ids: Sequence[str] | None) -> int:
        """Delete dead letters (all with ``queue.purge``, or those ``ids``)."""
        timeout = self.options.publish_timeout
        try:
            if ids is None:
                return self.link.purge(failed_queue(queue), timeout=timeout)
            browsed = self.link.browse(failed_queue(queue), None, timeout=timeout)
        except QueueNotFoundError:
            return 0
        wanted = set(ids)
        chosen = [tag for tag, p, b in browsed.messages if message_id_of(p, b) in wanted]
        self.link.release_browsed(browsed, chosen, timeout)
        return len(chosen)

    @hookimpl
    def pashq_queue_empty(self, queue: str) -> bool:
        """Whether nothing of ``queue`` is ready: none buffered here, none ready on the
        broker (a passive declare), and none on its way to this consumer (the broker may
        have dispatched some just after the last acks and answered the declare before they
        arrived: a round trip on the consume channel brings them in)."""
        timeout = self.options.publish_timeout
        if self.link.buffered(queue):
            return False
        if self.link.declare(queue, None, passive=True, timeout=timeout) != 0:
            return False
        if self.link.consuming(queue):
            self.link.settle_consumer(timeout=timeout)
        return self.link.buffered(queue) == 0

    # -- pashq move ----------------------------------------------------------------------

    @hookimpl
    def pashq_push_moved(self, queue: str, messages: Sequence[MovedMessage]) -> list[str]:
        """Publish moved messages (as ``pashq_push``: persistent, confirmed, delayed ones
        through the delay queues) with their attempts in ``x-pashq-attempts``."""
        self._ensure(queue)
        limit = self.link.max_message_size or MAX_MESSAGE_BYTES
        items: list[Publish] = []
        for moved in messages:
            m = moved.message
            if len(m.body) > limit:
                raise MessageTooLargeError(
                    f"message {m.id} for queue {queue!r} is {len(m.body)} bytes; RabbitMQ "
                    f"accepts at most {limit} (max_message_size); nothing of this batch "
                    "was published"
                )
            ms = delay_milliseconds(m.delay) if m.delay > 0 else 0
            target = self._ensure_delay(queue, ms) if ms else queue
            properties = new_properties(m.id, m.type_name, m.body)
            if moved.attempts > 0:
                properties.headers = {ATTEMPTS_HEADER: moved.attempts}
            items.append(Publish(target, m.body, properties, m.id))
        try:
            self.link.publish(
                items,
                timeout=self.options.publish_timeout,
                what=f"publishing {len(items)} moved message(s) to queue {queue!r}",
            )
        except DriverError:
            self._forget({queue} | {p.routing_key for p in items})
            raise
        return [m.message.id for m in messages]

    @hookimpl
    def pashq_failed_store(self, queue: str, dead_letters: Sequence[DeadLetter]) -> list[str]:
        """Publish moved dead letters to ``<queue>.failed`` with their reason (confirmed);
        a repeat is not recognised (browsing the failed queue for ids would cost a pass)."""
        if not dead_letters:
            return []
        self._ensure_failed(queue)
        copies = []
        for dead in dead_letters:
            headers = failure_headers(dead.attempts, dead.reason, dead.traceback)
            if dead.failed_at is not None:
                headers[FAILED_AT_HEADER] = utc_text(dead.failed_at)
            properties = new_properties(dead.id, "", dead.body)
            properties.type = None
            properties.headers = headers
            copies.append(Publish(failed_queue(queue), dead.body, properties, dead.id))
        self.link.publish(
            copies,
            timeout=self.options.publish_timeout,
            what=f"storing {len(copies)} moved dead letter(s) of queue {queue!r}",
        )
        return [d.id for d in dead_letters]

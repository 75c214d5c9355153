"""``BrokerLink``: one I/O thread that owns one pika connection.

pika is not thread-safe, so every pika object lives on the link's thread: a
``SelectConnection`` on a private :class:`~pika.adapters.select_connection.IOLoop`. Other
threads (the worker's main thread, its handler threads, a dispatching web request) hand
work to it with ``IOLoop.add_callback_threadsafe`` and wait on a future or an event.
Because the loop never runs user code, heartbeats and acks keep flowing while a handler
runs for minutes.

The connection has two long-lived channels:

- the *publish* channel, in confirm mode: a :class:`PublishJob` (one ``pashq_push`` or the
  copies of a ``pashq_nack``) is published as a window of up to ``max_in_flight``
  unconfirmed messages and completes when every message is confirmed; broker nacks and
  returned (unroutable, ``mandatory``) messages fail the job, naming their ids;
- the *consume* channel, with ``basic.qos(prefetch)``: consumers are started lazily on the
  first pull of a queue and push deliveries into a per-queue buffer that ``pull`` takes
  from; acks go back to the loop and are sent with ``multiple=True`` where the order of
  outstanding delivery tags allows.

Short administrative operations (declare, purge, basic.get browsing) use a channel of their
own, so a 404 or 406 closes nothing else.

When the connection is lost, the link reconnects with exponential backoff, declares again,
and restarts the consumers. Each consume channel has an *epoch*; deliveries of an older
epoch are stale: their acks are dropped (the broker redelivers them), and buffered ones
are discarded. Publish jobs that were not fully confirmed are published again on the new
connection, within their caller's ``publish_timeout``.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import contextlib
import functools
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import pika
import pika.exceptions
from pika import spec
from pika.adapters.select_connection import IOLoop

from pashq.delivery import Delivery
from pashq.errors import (
    DriverError,
    MessageTooLargeError,
    PartialPushError,
    QueueNotFoundError,
)
from pashq.text import safe_text
from pashq_rabbitmq.properties import attempts_of, message_id_of

__all__ = ["BrokerLink", "Browsed", "Publish", "PublishJob", "Receipt"]

log = logging.getLogger(__name__)

#: Links still open; closed at interpreter exit so that acks already handed to an I/O
#: thread reach the broker (a daemon thread is otherwise frozen mid-way, and the broker
#: would redeliver messages that were processed and acked).
_open_links: weakref.WeakSet[BrokerLink] = weakref.WeakSet()


@atexit.register
def _close_open_links() -> None:
    for link in list(_open_links):
        if link.pid == os.getpid():  # not a parent's link inherited through fork
            with contextlib.suppress(Exception):
                link.close(timeout=5.0)


def _after_fork_in_child() -> None:
    # The parent's links are dead in the child: their I/O thread did not survive the fork,
    # and their socket and loop belong to the parent. Mark them closed (so a caller gets a
    # clear error, not a wait on a thread that is not there) and give them fresh locks (a
    # parent thread may have held one at the fork). Their sockets are left alone: closing
    # them here would not help the parent, and shutting them down would break it.
    for link in list(_open_links):
        link._inherited()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


_CONSUMER_TIMEOUT_HINT = (
    "RabbitMQ closed the consume channel because a delivery stayed unacknowledged longer "
    "than its consumer_timeout (default 30 min); raise consumer_timeout in rabbitmq.conf "
    "or keep handlers shorter. Unacked deliveries are redelivered."
)


@attrs.frozen(slots=True)
class Receipt:
    """What a :class:`~pashq.Delivery` from this driver carries as its ``receipt``.

    :ivar epoch: the consume channel it arrived on (acks on another epoch are dropped).
    :ivar tag: the delivery tag on that channel.
    :ivar properties: the message's AMQP properties (copied into retries and dead letters).
    """

    epoch: int
    tag: int
    properties: Any


@attrs.frozen(slots=True)
class Publish:
    """One message to publish through the default exchange to ``routing_key``."""

    routing_key: str
    body: bytes
    properties: Any
    message_id: str


class _PartlyTooLargeError(PartialPushError, MessageTooLargeError):
    """Some messages of a batch were stored; others were refused as too large."""


#: RabbitMQ's text when a message exceeds ``max_message_size`` (channel closed, 406).
_TOO_LARGE = re.compile(r"message size (\d+) is larger than configured max size (\d+)")
#: Channel-close codes that refuse a publish for good (publishing it again cannot help):
#: 311 content-too-large, 403 access-refused, 404 not-found, 406 precondition-failed.
_REFUSALS = frozenset({311, 403, 404, 406})


class PublishJob:
    """A batch of publishes that completes once every message is confirmed (or failed)."""

    __slots__ = (
        "cancelled",
        "done",
        "errors",
        "failed",
        "items",
        "pending",
        "returned",
        "todo",
        "too_large",
    )

    def __init__(self, items: Sequence[Publish]) -> None:
        self.items = items
        self.todo: collections.deque[int] = collections.deque(range(len(items)))
        self.pending: set[int] = set()
        self.returned: set[int] = set()
        self.failed: list[int] = []
        #: Why a failed message was refused, where it is not a plain nack.
        self.errors: dict[int, str] = {}
        self.too_large: set[int] = set()
        self.done = threading.Event()
        self.cancelled = False

    def fail(self, index: int, why: str, *, too_large: bool = False) -> None:
        """Mark one message as not stored, for a reason that publishing again cannot fix."""
        self.pending.discard(index)
        self.failed.append(index)
        self.errors[index] = why
        if too_large:
            self.too_large.add(index)

    def unsettled(self) -> list[int]:
        """Return the indexes of messages neither confirmed nor failed (yet).

        Called by the waiting thread while the I/O thread may change the job: copies are
        retried if a set changes size meanwhile.
        """
        for _ in range(100):
            try:
                return sorted(set(self.todo) | set(self.pending))
            except RuntimeError:  # changed during iteration
                continue
        return list(range(len(self.items)))  # pragma: no cover - never settles

    def finish_if_complete(self) -> None:
        if not self.todo and not self.pending:
            self.done.set()


@attrs.define
class Browsed:
    """Messages fetched with ``basic.get`` (not acked) on an admin channel held open.

    :ivar messages: ``(delivery tag, properties, body)`` in queue order.
    """

    channel: Any
    messages: list[tuple[int, Any, bytes]]


def _id_list(ids: Iterable[str], limit: int = 10) -> str:
    ids = list(ids)
    shown = ", ".join(ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


class BrokerLink:
    """The I/O thread of one pashq connection to RabbitMQ (see the module docstring).

    :param parameters: pika connection parameters.
    :param where: the password-free broker address, for messages.
    :param prefetch: ``basic.qos`` prefetch count of each consumer.
    :param confirm: publish in confirm mode (a push returns once confirmed).
    :param max_in_flight: unconfirmed publishes allowed at once.
    :param reconnect_delay_max: longest pause between reconnection attempts.
    :param consume_declare: given a queue, returns ``("auto" | "passive", arguments)``: how
        to declare it (on the I/O thread) before a consumer starts on it.
    """

    def __init__(
        self,
        parameters: pika.connection.Parameters,
        *,
        where: str,
        prefetch: int,
        confirm: bool,
        max_in_flight: int,
        reconnect_delay_max: float,
        consume_declare: Callable[[str], tuple[str, Any]],
    ) -> None:
        self.parameters = parameters
        self.where = where
        self.prefetch = prefetch
        self.confirm = confirm
        self.max_in_flight = max_in_flight
        self.reconnect_delay_max = reconnect_delay_max
        self._consume_declare = consume_declare
        self._ioloop = IOLoop()
        self._thread = threading.Thread(target=self._run, name="pashq-rabbitmq-io", daemon=True)
        # State owned by the I/O thread.
        self._connection: Any = None
        self._closing = False
        self._attempt = 0
        self._when_ready: list[Callable[[], None]] = []
        self._pub: Any = None
        self._pub_seq = 0
        self._unconfirmed: collections.OrderedDict[int, tuple[PublishJob, int]] = (
            collections.OrderedDict()
        )
        self._jobs: collections.deque[PublishJob] = collections.deque()
        #: Publishes still to make one at a time, to find which one the broker refuses.
        self._probe = 0
        #: The broker's ``max_message_size``, once it refused a message for its size.
        self.max_message_size: int | None = None
        self._con: Any = None
        self._outstanding: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._consumer_tags: dict[str, str] = {}
        #: Queues whose consumer start waits for its declare on the current channel.
        self._starting: set[str] = set()
        self._consume_waiters: dict[str, list[concurrent.futures.Future[None]]] = {}
        self._wanted: set[str] = set()
        # Shared state.
        self._cond = threading.Condition()
        self._buffers: dict[str, collections.deque[Delivery]] = {}
        self._waiting = 0
        self.epoch = 0  # consume channel number; written by the I/O thread only
        self.ready = False
        self.connections = 0
        self.last_error: str | None = None
        self._stopped = False
        self.pid = os.getpid()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the I/O thread; it connects in the background."""
        self.pid = os.getpid()
        _open_links.add(self)
        self._thread.start()

    def _inherited(self) -> None:
        """In a forked child: this link is the parent's; never use it here."""
        self._cond = threading.Condition()
        self._stopped = True
        self._buffers.clear()
        _open_links.discard(self)

    def close(self, timeout: float = 10.0) -> None:
        """Close the connection (unacked deliveries return to their queues) and stop."""
        if self._stopped or self.pid != os.getpid():
            return
        with contextlib.suppress(Exception):  # the loop may already be gone
            self._ioloop.add_callback_threadsafe(self._close_now)
        self._thread.join(timeout)
        self._stopped = True
        _open_links.discard(self)
        with self._cond:
            self._buffers.clear()
            self._cond.notify_all()

    def _run(self) -> None:
        self._ioloop.add_callback_threadsafe(self._connect)
        try:
            self._ioloop.start()
        except Exception:
            if self._closing:  # pika asserts when a close aborts its opening: we are done
                log.debug(
                    "the RabbitMQ I/O loop for %s ended while closing", self.where, exc_info=True
                )
            else:
                log.exception("the RabbitMQ I/O loop for %s crashed", self.where)
        finally:
            self._stopped = True
            self._fail_all_jobs()
            with self._cond:
                self.ready = False
                self._cond.notify_all()
            with contextlib.suppress(Exception):
                self._ioloop.close()

    def _close_now(self) -> None:
        self._closing = True
        conn = self._connection
        # Open or still opening (pika has no ``is_opening``): close it; pika then calls
        # _on_closed, or _on_open_error while opening, and either stops the loop.
        if conn is not None and not (conn.is_closed or conn.is_closing):
            try:
                conn.close()
                return
            except Exception:  # already closing, or the transport is gone: just stop
                log.debug("closing the RabbitMQ connection to %s failed", self.where, exc_info=True)
        self._ioloop.stop()

    # -- connecting ---------------------------------------------------------------------

    def _connect(self) -> None:
        if self._closing:
            self._ioloop.stop()
            return
        self._connection = pika.SelectConnection(
            self.parameters,
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_closed,
            custom_ioloop=self._ioloop,
        )

    def _retry_later(self) -> None:
        if self._closing:
            self._ioloop.stop()
            return
        delay = min(self.reconnect_delay_max, 0.25 * 2**self._attempt)
        self._attempt += 1
        log.info("reconnecting to RabbitMQ at %s in %.2fs", self.where, delay)
        self._ioloop.call_later(delay, self._connect)

    def _on_open_error(self, connection: Any, error: BaseException) -> None:
        if self._closing:  # close() aborted the opening: not a connection problem
            self._connection = None
            self._ioloop.stop()
            return
        self._set_error(f"cannot connect to RabbitMQ at {self.where}: {_describe(error)}")
        self._connection = None
        self._retry_later()

    def _on_open(self, connection: Any) -> None:
        connection.add_on_connection_blocked_callback(self._on_blocked)
        connection.add_on_connection_unblocked_callback(self._on_unblocked)
        connection.channel(on_open_callback=self._on_pub_open)

    def _on_blocked(self, connection: Any, frame: Any) -> None:
        reason = getattr(frame.method, "reason", "") or "resource alarm"
        self._set_error(
            f"RabbitMQ at {self.where} blocked publishing ({reason}: low memory or disk on the "
            "broker); pushes wait up to publish_timeout"
        )

    def _on_unblocked(self, connection: Any, frame: Any) -> None:
        log.warning("RabbitMQ at %s unblocked publishing", self.where)
        self.last_error = None

    def _on_pub_open(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_pub_closed)
        channel.add_on_return_callback(self._on_return)
        if self.confirm:
            channel.confirm_delivery(self._on_confirm, callback=lambda _f: self._pub_ready(channel))
        else:
            self._pub_ready(channel)

    def _pub_ready(self, channel: Any) -> None:
        self._pub = channel
        self._pub_seq = 0
        if self._con is None:
            self._connection.channel(on_open_callback=self._on_con_open)
        else:  # only the publish channel was reopened
            self._pump()

    def _on_con_open(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_con_closed)
        channel.add_on_cancel_callback(self._on_cancelled)
        channel.basic_qos(
            prefetch_count=self.prefetch, callback=lambda _f: self._con_ready(channel)
        )

    def _con_ready(self, channel: Any) -> None:
        self._con = channel
        self._outstanding.clear()
        self._consumer_tags.clear()
        self._starting.clear()
        with self._cond:
            self.epoch += 1
            self._buffers.clear()
            first = not self.ready and self._pub is not None
            self.ready = self._pub is not None
            self._cond.notify_all()
        if first:
            self._attempt = 0
            self.connections += 1
            if self.connections > 1:
                log.warning("reconnected to RabbitMQ at %s", self.where)
            self.last_error = None
        waiting, self._when_ready = self._when_ready, []
        for callback in waiting:
            self._safely(callback)
        for queue in sorted(self._wanted):
            self._start_consumer(queue)
        self._pump()

    def _on_closed(self, connection: Any, reason: BaseException) -> None:
        self._connection = None
        self._pub = None
        self._con = None
        self._outstanding.clear()
        self._consumer_tags.clear()
        self._starting.clear()
        with self._cond:
            self.ready = False
            self._buffers.clear()
            self._cond.notify_all()
        self._requeue_unconfirmed()
        if self._closing:
            self._fail_all_jobs()
            self._ioloop.stop()
            return
        self._set_error(f"lost the connection to RabbitMQ at {self.where}: {_describe(reason)}")
        self._retry_later()

    def _on_pub_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self._pub and self._pub is not None:
            return
        self._pub = None
        delay = 0.2
        if (
            isinstance(reason, pika.exceptions.ChannelClosedByBroker)
            and reason.reply_code in _REFUSALS
        ):
            self._settle_refusal(reason)
            delay = 0.0  # the refused message is settled: nothing to wait for
        self._requeue_unconfirmed()
        conn = self._connection
        if conn is None or not conn.is_open or self._closing:
            return
        self._set_error(f"RabbitMQ closed the publish channel: {_describe(reason)}")
        self._ioloop.call_later(delay, self._reopen_pub)

    def _settle_refusal(self, reason: pika.exceptions.ChannelClosedByBroker) -> None:
        """The broker closed the publish channel refusing a publish: fail that one only.

        Publishing the refused message again would close the channel again, until the
        caller's timeout. A size refusal names the size: every unconfirmed message larger
        than the limit fails (and later ones fail before publishing). Otherwise, with one
        message unconfirmed, it is the one; with several, the next publishes go one at a
        time until the refused one is alone in flight when the channel closes.
        """
        text = f"{reason.reply_code} {safe_text(str(reason.reply_text), 300)}"
        unconfirmed = self._unconfirmed
        touched: set[PublishJob] = set()
        size = _TOO_LARGE.search(str(reason.reply_text))
        if size is not None:
            limit = int(size.group(2))
            self.max_message_size = limit
            for seq, (job, index) in list(unconfirmed.items()):
                if len(job.items[index].body) > limit:
                    del unconfirmed[seq]
                    job.fail(
                        index, _too_large_text(len(job.items[index].body), limit), too_large=True
                    )
                    touched.add(job)
        elif len(unconfirmed) == 1:
            _, (job, index) = unconfirmed.popitem()
            job.fail(index, f"refused by RabbitMQ (channel closed: {text})")
            touched.add(job)
            self._probe = max(0, self._probe - 1)
        elif unconfirmed:
            self._probe = len(unconfirmed)
        for job in touched:
            job.finish_if_complete()

    def _reopen_pub(self) -> None:
        conn = self._connection
        if conn is not None and conn.is_open and self._pub is None:
            conn.channel(on_open_callback=self._on_pub_open)

    def _on_con_closed(self, channel: Any, reason: BaseException) -> None:
        if channel is not self._con and self._con is not None:
            return
        self._con = None
        self._outstanding.clear()
        self._consumer_tags.clear()
        self._starting.clear()
        with self._cond:
            self._buffers.clear()
            self._cond.notify_all()
        conn = self._connection
        if conn is None or not conn.is_open or self._closing:
            return
        text = _describe(reason)
        # 3.10: "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out ..."
        if "acknowledgement" in text and "timed out" in text:
            log.warning(_CONSUMER_TIMEOUT_HINT)
        if "x-max-priority" in text:
            self._set_error(str(_error(reason, "RabbitMQ closed the consume channel")))
        else:
            self._set_error(f"RabbitMQ closed the consume channel: {text}")
        delay = min(self.reconnect_delay_max, 0.25 * 2**self._attempt)
        self._attempt += 1
        self._ioloop.call_later(delay, self._reopen_con)

    def _on_cancelled(self, frame: Any) -> None:
        # The broker cancelled a consumer (queue deleted, quorum leader moved ...): start
        # it again rather than sit attached to nothing.
        tag = frame.method.consumer_tag
        for queue, consumer_tag in list(self._consumer_tags.items()):
            if consumer_tag == tag:
                del self._consumer_tags[queue]
                self._set_error(f"RabbitMQ cancelled the consumer of queue {queue!r}")
                self._ioloop.call_later(0.5, functools.partial(self._start_consumer, queue))

    def _reopen_con(self) -> None:
        conn = self._connection
        if conn is not None and conn.is_open and self._con is None:
            conn.channel(on_open_callback=self._on_con_open)

    def _set_error(self, text: str) -> None:
        if text != self.last_error:
            log.warning("%s", text)
        self.last_error = text

    def _safely(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            log.exception("RabbitMQ I/O callback failed")

    # -- calling into the loop -------------------------------------------------------------

    def status(self) -> str:
        """Say whether the link is connected, and the last error if not."""
        if self._stopped:
            return "the connection is closed"
        if self.ready:
            error = f"; last error: {self.last_error}" if self.last_error else ""
            return f"connected to {self.where}{error}"
        return self.last_error or f"connecting to {self.where}"

    def submit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the I/O thread."""
        if self._stopped:
            if self.pid != os.getpid():
                raise DriverError(
                    f"the RabbitMQ connection to {self.where} is closed in this process: it "
                    "belongs to the parent process it was forked from (use the pashq "
                    "connection, which opens one of its own)"
                )
            raise DriverError(f"the RabbitMQ connection to {self.where} is closed")
        self._ioloop.add_callback_threadsafe(functools.partial(self._safely, callback))

    def call(
        self,
        operation: Callable[[concurrent.futures.Future[Any]], None],
        *,
        timeout: float,
        what: str,
    ) -> Any:
        """Run ``operation(future)`` on the I/O thread once connected; wait for the future."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                operation(future)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)

        self.submit(functools.partial(self._when_connected, run))
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DriverError(
                f"{what}: no answer from RabbitMQ within {timeout:g}s ({self.status()})"
            ) from None

    def _when_connected(self, callback: Callable[[], None]) -> None:
        if self.ready and self._connection is not None:
            callback()
        else:
            self._when_ready.append(callback)

    def _admin(
        self,
        future: concurrent.futures.Future[Any],
        what: str,
        on_open: Callable[[Any], None],
        keep_open: bool = False,
    ) -> None:
        """Open a channel of its own for one operation; its close fails ``future``."""

        def closed(channel: Any, reason: BaseException) -> None:
            if not future.done():
                future.set_exception(_error(reason, what))

        def opened(channel: Any) -> None:
            channel.add_on_close_callback(closed)
            if future.done():  # the caller gave up meanwhile
                _close_quietly(channel)
                return
            try:
                on_open(channel)
            except Exception as exc:
                # A frame pika cannot encode (a name over 255 bytes ...): raised out of this
                # callback it would abort the whole connection. Fail this operation only.
                if not future.done():
                    future.set_exception(DriverError(f"{what}: cannot be sent: {_short(exc)}"))
                _close_quietly(channel)
                return

            def done(result: concurrent.futures.Future[Any]) -> None:
                # Close the channel when the operation is over; one kept open for the
                # caller is closed only if the caller gave up (it would hold messages).
                if not keep_open or result.cancelled():
                    self.submit(functools.partial(_close_quietly, channel))

            future.add_done_callback(done)

        self._connection.channel(on_open_callback=opened)

    # -- administration --------------------------------------------------------------------

    def declare(
        self, queue: str, arguments: dict[str, Any] | None, *, passive: bool, timeout: float
    ) -> int:
        """Declare ``queue`` (durable) or check it exists (``passive``); return its ready count."""
        what = f"{'checking' if passive else 'declaring'} queue {queue!r}"

        def operation(future: concurrent.futures.Future[int]) -> None:
            def on_open(channel: Any) -> None:
                channel.queue_declare(
                    queue,
                    passive=passive,
                    durable=True,
                    arguments=arguments,
                    callback=lambda frame: _resolve(future, frame.method.message_count),
                )

            self._admin(future, what, on_open)

        result: int = self.call(operation, timeout=timeout, what=what)
        return result

    def purge(self, queue: str, *, timeout: float) -> int:
        """Purge ``queue``; return how many messages were deleted."""
        what = f"purging queue {queue!r}"

        def operation(future: concurrent.futures.Future[int]) -> None:
            def on_open(channel: Any) -> None:
                channel.queue_purge(
                    queue, callback=lambda frame: _resolve(future, frame.method.message_count)
                )

            self._admin(future, what, on_open)

        result: int = self.call(operation, timeout=timeout, what=what)
        return result

    def browse(self, queue: str, limit: int | None, *, timeout: float) -> Browsed:
        """Fetch up to ``limit`` messages of ``queue`` with ``basic.get``, without acking.

        The channel stays open: pass the result to :meth:`release_browsed`, which acks what
        you chose and closes the channel (the broker requeues the rest in place).
        """
        what = f"reading queue {queue!r}"

        def operation(future: concurrent.futures.Future[Browsed]) -> None:
            messages: list[tuple[int, Any, bytes]] = []

            def on_open(channel: Any) -> None:
                browsed = Browsed(channel, messages)

                def get_next() -> None:
                    if limit is not None and len(messages) >= limit:
                        _resolve(future, browsed)
                    else:
                        channel.basic_get(queue, callback=on_message)

                def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
                    messages.append((method.delivery_tag, properties, body))
                    get_next()

                channel.add_callback(
                    lambda _frame: _resolve(future, browsed), [spec.Basic.GetEmpty], one_shot=False
                )
                get_next()

            self._admin(future, what, on_open, keep_open=True)

        result: Browsed = self.call(operation, timeout=timeout, what=what)
        return result

    def release_browsed(self, browsed: Browsed, ack: Iterable[int], timeout: float) -> None:
        """Ack the chosen delivery tags of a :meth:`browse`, close its channel, and wait
        until the broker confirmed the close (by then the rest is requeued)."""
        tags = sorted(set(ack))

        def operation(future: concurrent.futures.Future[None]) -> None:
            channel = browsed.channel
            if not channel.is_open:
                raise DriverError("the channel used to read dead letters was closed; retry")
            for tag in tags:
                channel.basic_ack(tag)
            channel.add_on_close_callback(lambda _c, _r: _resolve(future, None))
            channel.close()

        future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                operation(future)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)

        self.submit(run)
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise DriverError(
                f"closing the channel used to read dead letters: no answer within {timeout:g}s "
                f"({self.status()})"
            ) from None

    # -- publishing --------------------------------------------------------------------------

    def publish(self, items: Sequence[Publish], *, timeout: float, what: str) -> None:
        """Publish ``items`` and wait until the broker confirmed every one of them.

        :raises DriverError: naming the ids that were nacked, returned as unroutable, or
            not confirmed within ``timeout`` (connection lost for too long).
        """
        if not items:
            return
        job = PublishJob(items)
        self.submit(functools.partial(self._add_job, job))
        if not job.done.wait(timeout):
            job.cancelled = True
            missing = job.unsettled()
            if missing:
                failed = sorted(set(job.failed))
                stored = sorted(set(range(len(items))) - set(missing) - set(failed))
                text = (
                    f"{what}: RabbitMQ did not confirm {len(missing)} message(s) within "
                    f"{timeout:g}s ({self.status()}); they may or may not have been stored: "
                    f"{_id_list(items[i].message_id for i in missing)}"
                )
                if failed:
                    text += f"; {self._failures(job, failed)}"
                if stored:
                    raise PartialPushError(
                        text,
                        stored=[items[i].message_id for i in stored],
                        not_stored=[items[i].message_id for i in sorted(missing + failed)],
                    )
                raise DriverError(text)
        if job.failed:
            failed = sorted(set(job.failed))
            stored = sorted(set(range(len(items))) - set(failed))
            text = f"{what}: {self._failures(job, failed)}"
            too_large = bool(job.too_large)
            if stored:
                cls = _PartlyTooLargeError if too_large else PartialPushError
                raise cls(
                    text,
                    stored=[items[i].message_id for i in stored],
                    not_stored=[items[i].message_id for i in failed],
                )
            raise MessageTooLargeError(text) if too_large else DriverError(text)

    def _failures(self, job: PublishJob, failed: Sequence[int]) -> str:
        """Say which messages were not stored and why, grouped by reason."""
        reasons: dict[str, list[str]] = {}
        for i in failed:
            item = job.items[i]
            if i in job.errors:
                why = job.errors[i]
            elif i in job.returned:
                why = f"returned as unroutable (does queue {item.routing_key!r} exist?)"
            elif self._stopped:
                why = "not confirmed before the connection was closed"
            else:
                why = "rejected by the broker (nack)"
            reasons.setdefault(why, []).append(item.message_id)
        parts = [f"{len(ids)} {why}: {_id_list(ids)}" for why, ids in reasons.items()]
        return f"{len(failed)} message(s) not stored: " + "; ".join(parts)

    def _add_job(self, job: PublishJob) -> None:
        self._jobs.append(job)
        self._pump()

    def _pump(self) -> None:
        """Publish queued jobs while the window of unconfirmed messages has room."""
        channel = self._pub
        if channel is None or not self.ready or not channel.is_open:
            return
        jobs = self._jobs
        unconfirmed = self._unconfirmed
        room = self.max_in_flight - len(unconfirmed)
        if self._probe:
            room = min(room, 1 - len(unconfirmed))  # each one alone in flight
        publish = channel.basic_publish
        confirm = self.confirm
        limit = self.max_message_size
        while jobs and room > 0:
            job = jobs[0]
            if job.cancelled:
                jobs.popleft()
                # Its suspects (requeued first) will never be published: stop probing them.
                self._probe = max(0, self._probe - len(job.todo))
                continue
            todo = job.todo
            items = job.items
            while todo and room > 0:
                index = todo.popleft()
                item = items[index]
                if limit is not None and len(item.body) > limit:
                    job.fail(index, _too_large_text(len(item.body), limit), too_large=True)
                    continue
                try:
                    publish("", item.routing_key, item.body, item.properties, mandatory=True)
                except _CHANNEL_GONE:
                    todo.appendleft(index)
                    self._coalesce_output()
                    return
                except Exception as exc:
                    # The frame could not be encoded (pika marshals it whole before
                    # sending anything): this message fails, the others go on.
                    job.fail(index, f"cannot be encoded for AMQP: {_short(exc)}")
                    continue
                if confirm:
                    self._pub_seq += 1
                    unconfirmed[self._pub_seq] = (job, index)
                    job.pending.add(index)
                    room -= 1
            if not todo:
                jobs.popleft()
                if confirm:
                    job.finish_if_complete()  # all of it may have failed before publishing
                else:
                    self._finish_when_flushed(job)
        self._coalesce_output()

    def _coalesce_output(self) -> None:
        """Join pika's buffered output frames into one chunk.

        pika buffers each frame (three per message) separately and sends each with its own
        ``send()`` system call; for a burst of publishes that is most of the I/O thread's
        time. Joining the buffer makes it one call. Best effort: pika internals
        (``_transport._tx_buffers``) are checked and left alone if they change.
        """
        transport = getattr(self._connection, "_transport", None)
        buffers = getattr(transport, "_tx_buffers", None)
        if isinstance(buffers, collections.deque) and len(buffers) > 1:
            joined = b"".join(buffers)
            buffers.clear()
            buffers.append(joined)

    def _finish_when_flushed(self, job: PublishJob) -> None:
        """Without confirms, a job is done once its data left pika's buffer for the socket."""
        connection = self._connection
        size = getattr(connection, "_get_write_buffer_size", None)
        try:
            pending = size() if size is not None and connection.is_open else 0
        except Exception:  # pragma: no cover - transport already gone
            pending = 0
        if pending:
            self._ioloop.call_later(0.001, functools.partial(self._finish_when_flushed, job))
        else:
            job.done.set()

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        # A Basic.Return precedes the Basic.Ack of the same message: mark it failed here.
        message_id = properties.message_id
        for job, index in self._unconfirmed.values():
            item = job.items[index]
            if (
                item.properties.message_id == message_id
                and item.routing_key == method.routing_key
                and (index not in job.returned)
                and (message_id is not None or item.body == body)
            ):
                job.returned.add(index)
                return

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        nacked = isinstance(method, spec.Basic.Nack)
        tag = method.delivery_tag
        unconfirmed = self._unconfirmed
        settled: list[tuple[PublishJob, int]] = []
        if method.multiple:
            while unconfirmed:
                first = next(iter(unconfirmed))
                if first > tag:
                    break
                settled.append(unconfirmed.popitem(last=False)[1])
        else:
            found = unconfirmed.pop(tag, None)
            if found is not None:
                settled.append(found)
        if self._probe:
            self._probe = max(0, self._probe - len(settled))
        touched: set[PublishJob] = set()
        for job, index in settled:
            job.pending.discard(index)
            if nacked or index in job.returned:
                job.failed.append(index)
            touched.add(job)
        for job in touched:
            job.finish_if_complete()
        self._pump()

    def _requeue_unconfirmed(self) -> None:
        """After a lost channel: publish unconfirmed messages again on the next one."""
        if not self._unconfirmed:
            return
        jobs: dict[PublishJob, list[int]] = {}
        for job, index in self._unconfirmed.values():
            jobs.setdefault(job, []).append(index)
        self._unconfirmed.clear()
        for job, indexes in jobs.items():
            job.pending.difference_update(indexes)
            job.returned.difference_update(indexes)
            was_queued = bool(job.todo)
            job.todo.extendleft(sorted(indexes, reverse=True))
            if not was_queued and job not in self._jobs:
                self._jobs.appendleft(job)

    def _fail_all_jobs(self) -> None:
        self._requeue_unconfirmed()
        self._probe = 0
        while self._jobs:
            job = self._jobs.popleft()
            job.failed.extend(job.todo)
            job.todo.clear()
            job.pending.clear()
            job.done.set()

    # -- consuming ---------------------------------------------------------------------------

    def consume(self, queue: str, *, timeout: float) -> None:
        """Start consuming ``queue`` (once; restarted after reconnections) and wait for it."""
        if queue in self._wanted and queue in self._consumer_tags:
            return

        def operation(future: concurrent.futures.Future[None]) -> None:
            if queue in self._consumer_tags:
                _resolve(future, None)
                return
            self._consume_waiters.setdefault(queue, []).append(future)
            if queue not in self._wanted:
                self._wanted.add(queue)
                self._start_consumer(queue)

        # Registered even while disconnected: _con_ready starts every wanted queue.
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.submit(functools.partial(operation, future))
        try:
            future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise DriverError(
                f"starting a consumer on queue {queue!r}: not attached within {timeout:g}s "
                f"({self.status()})"
            ) from None

    def _start_consumer(self, queue: str) -> None:
        channel = self._con
        if (
            channel is None
            or not channel.is_open
            or queue in self._consumer_tags
            or queue in self._starting
        ):
            # Started, or starting: a restart scheduled after a broker cancel may fire
            # while the restart after a reconnect waits for its declare. A second
            # basic.consume would leave two consumers on the queue.
            return
        epoch = self.epoch
        declare_queue, arguments = self._consume_declare(queue)
        passive = declare_queue == "passive"
        self._starting.add(queue)

        def declared(_frame: Any) -> None:
            if channel is not self._con:
                return  # the channel was lost meanwhile (and _starting cleared)
            self._starting.discard(queue)
            if queue in self._consumer_tags or queue not in self._wanted:
                return
            tag = channel.basic_consume(
                queue,
                functools.partial(self._on_message, queue, epoch),
                callback=lambda _f: consumed(),
            )
            self._consumer_tags[queue] = tag

        def consumed() -> None:
            self._attempt = 0
            for future in self._consume_waiters.pop(queue, []):
                _resolve(future, None)

        try:
            channel.queue_declare(
                queue, passive=passive, durable=True, arguments=arguments, callback=declared
            )
        except Exception as exc:
            # Not encodable (a name the core's check did not see): fail this queue's
            # waiters; raised here it would stop the restart of every other consumer.
            self._starting.discard(queue)
            self._wanted.discard(queue)
            error = DriverError(f"starting a consumer on queue {queue!r}: {_short(exc)}")
            for future in self._consume_waiters.pop(queue, []):
                if not future.done():
                    with contextlib.suppress(concurrent.futures.InvalidStateError):
                        future.set_exception(error)

    def _on_message(
        self, queue: str, epoch: int, channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        tag = method.delivery_tag
        attempts = attempts_of(properties.headers, method.redelivered)
        self._outstanding[tag] = None
        delivery = Delivery(
            queue,
            properties.message_id or message_id_of(properties, body),
            body,
            attempts,
            Receipt(epoch, tag, properties),
            None,
        )
        cond = self._cond
        buffer = self._buffers.get(queue)
        if buffer is None:
            with cond:
                buffer = self._buffers.setdefault(queue, collections.deque())
        buffer.append(delivery)
        if self._waiting:
            with cond:
                cond.notify_all()

    def consuming(self, queue: str) -> bool:
        """Whether a consumer on ``queue`` is attached right now."""
        return self.ready and queue in self._consumer_tags

    def take(self, queue: str, max_messages: int, timeout: float) -> list[Delivery]:
        """Take up to ``max_messages`` buffered deliveries, waiting up to ``timeout``."""
        cond = self._cond
        buffer = self._buffers.get(queue)
        if not buffer:
            deadline = time.monotonic() + timeout
            with cond:
                self._waiting += 1
                try:
                    while True:
                        buffer = self._buffers.get(queue)
                        if buffer:
                            break
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or self._stopped:
                            return []
                        cond.wait(remaining)
                finally:
                    self._waiting -= 1
        out: list[Delivery] = []
        epoch = self.epoch
        try:
            while len(out) < max_messages:
                delivery = buffer.popleft()
                if delivery.receipt.epoch == epoch:
                    out.append(delivery)
        except IndexError:
            pass
        return out

    def settle_consumer(self, *, timeout: float) -> None:
        """One round trip on the consume channel (a ``basic.qos`` with the same prefetch):
        when it returns, every delivery the broker had already dispatched to this consumer
        has arrived in the local buffers (a channel's frames come in order)."""

        def operation(future: concurrent.futures.Future[None]) -> None:
            channel = self._con
            if channel is None or not channel.is_open:
                _resolve(future, None)
                return
            channel.basic_qos(
                prefetch_count=self.prefetch, callback=lambda _frame: _resolve(future, None)
            )

        self.call(operation, timeout=timeout, what="waiting for deliveries on their way")

    def buffered(self, queue: str) -> int:
        """How many deliveries of ``queue`` wait in the local buffer."""
        buffer = self._buffers.get(queue)
        return len(buffer) if buffer else 0

    def unacked(self) -> int:
        """Deliveries received on the current consume channel and not yet settled."""
        return len(self._outstanding)

    def ack(self, receipts: Sequence[Receipt]) -> None:
        """Ack deliveries (fire and forget); those of an old epoch are dropped quietly."""
        if receipts:
            self.submit(functools.partial(self._ack_now, receipts, False))

    def requeue(self, receipts: Sequence[Receipt]) -> None:
        """Nack deliveries with ``requeue=True`` (the broker marks them redelivered)."""
        if receipts:
            self.submit(functools.partial(self._ack_now, receipts, True))

    def _ack_now(self, receipts: Sequence[Receipt], requeue: bool) -> None:
        channel = self._con
        epoch = self.epoch
        tags = {r.tag for r in receipts if r.epoch == epoch}
        stale = len(receipts) - len(tags)
        if stale:
            log.debug("dropping %d settlement(s) of deliveries from a lost channel", stale)
        if not tags or channel is None or not channel.is_open:
            return
        outstanding = self._outstanding
        last = 0
        while outstanding:
            first = next(iter(outstanding))
            if first not in tags:
                break
            outstanding.popitem(last=False)
            tags.discard(first)
            last = first
        if last:
            if requeue:
                channel.basic_nack(last, multiple=True, requeue=True)
            else:
                channel.basic_ack(last, multiple=True)
        for tag in sorted(tags):
            if outstanding.pop(tag, False) is None:
                if requeue:
                    channel.basic_nack(tag, requeue=True)
                else:
                    channel.basic_ack(tag)


#: pika's errors for a channel or connection that went away under a publish.
_CHANNEL_GONE = (
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelClosed,
    pika.exceptions.ConnectionClosed,
    pika.exceptions.StreamLostError,
)


def _too_large_text(size: int, limit: int) -> str:
    return (
        f"refused by RabbitMQ as too large ({size} bytes; its max_message_size is {limit}: "
        "send a smaller message, or raise max_message_size in rabbitmq.conf)"
    )


def _short(exc: BaseException) -> str:
    """Name an exception briefly (its text may repeat a huge or hostile value)."""
    if isinstance(exc, pika.exceptions.ShortStringTooLong):
        return "a name or property is longer than AMQP's limit of 255 bytes (ShortStringTooLong)"
    if isinstance(exc, UnicodeEncodeError):
        return "text that cannot be encoded as UTF-8, such as a lone surrogate (UnicodeEncodeError)"
    return f"{type(exc).__name__}: {safe_text(str(exc), 200)}"


def _resolve(future: concurrent.futures.Future[Any], value: Any) -> None:
    if not future.done():
        # A caller that gave up may have cancelled it meanwhile.
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            future.set_result(value)


def _close_quietly(channel: Any) -> None:
    try:
        if channel.is_open:
            channel.close()
    except Exception:  # pragma: no cover - already closing
        pass


def _describe(error: BaseException) -> str:
    if isinstance(
        error, pika.exceptions.ConnectionClosedByBroker | (pika.exceptions.ChannelClosedByBroker)
    ):
        return f"{error.reply_code} {error.reply_text}"
    if isinstance(
        error,
        pika.exceptions.ProbableAuthenticationError | (pika.exceptions.ProbableAccessDeniedError),
    ):
        return f"authentication or access refused ({error}); check the user, password and vhost"
    if isinstance(error, pika.exceptions.IncompatibleProtocolError):
        return (
            "the server closed the connection during the AMQP handshake (is it RabbitMQ, "
            "and not a TLS port? is it refusing connections?)"
        )
    if isinstance(error, pika.exceptions.AMQPConnectionError) and error.args:
        inner = error.args[0]
        if isinstance(inner, BaseException):
            return _describe(inner)
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if text != type(error).__name__ else text


def _error(reason: BaseException, what: str) -> DriverError:
    if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
        code, text = reason.reply_code, reason.reply_text
        if code == 404:
            return QueueNotFoundError(
                f"{what}: RabbitMQ says {text}; nothing has declared it yet: dispatching to "
                'it or a worker consuming it declares it (with declare = "auto", the '
                "default), or create it on the broker"
            )
        if code == 406 and "x-max-priority" in text and "inequivalent" in text:
            return DriverError(
                f"{what}: RabbitMQ refused: {text}. The queue exists with another "
                "x-max-priority than the driver declares (none if pashq-rabbitmq 0.1 or "
                "another application declared it), and RabbitMQ cannot change the arguments "
                "of an existing queue. Either delete the queue (drain it first, or move its "
                "messages to a new queue, e.g. with a shovel) so pashq declares it again, or "
                "set max_priority on this connection to the queue's value (0 for a queue "
                "without priorities: priority= is then refused at dispatch); a queue_type "
                "other than the queue's (quorum queues have no x-max-priority) fails so too"
            )
        if code == 406:
            return DriverError(
                f"{what}: RabbitMQ refused: {text} (an existing queue has other arguments: "
                "check queue_type, or delete the queue)"
            )
        if code == 403:
            return DriverError(f"{what}: access refused: {text} (check the user's permissions)")
        return DriverError(f"{what}: RabbitMQ closed the channel: {code} {text}")
    return DriverError(f"{what}: {_describe(reason)}")

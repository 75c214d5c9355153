"""Hook specifications: the contract between the pashq core and its drivers and plugins.

Each connection has its own :class:`pluggy.PluginManager` holding exactly one driver, the
default JSON serializer (``trylast``) and the middleware its configuration names, so no hook
ever has to ask "is this my driver?". The core calls every hook with keyword arguments;
an implementation may accept fewer arguments than the spec (pluggy passes only those it
names), and arguments are only ever added, never renamed or removed.

Hooks may be called from several threads at once (the worker's puller, its handler threads
and its lease heartbeat); a driver must be thread-safe.

A driver is a class with ``name`` and ``capabilities`` attributes and hook implementations::

    from pashq import Capabilities, hookimpl

    class MyDriver:
        name = "mine"
        capabilities = Capabilities(persistent=True, lease=True)

        @hookimpl
        def pashq_connect(self, connection):
            self.client = connect(connection.options["url"])

        @hookimpl
        def pashq_push(self, queue, messages, options):
            if options:
                raise TypeError(f"unknown dispatch options: {sorted(options)}")
            return [self.client.put(queue, m.body) for m in messages]

It is found through the ``pashq.drivers`` entry-point group (see ``docs/writing-a-driver.md``).
"""

# Hookspecs are declarations: their bodies are docstrings only.
# mypy: disable-error-code="empty-body"
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

from pashq.coordination import Acquired
from pashq.delivery import (
    DeadLetter,
    Delivery,
    MovedMessage,
    OutgoingMessage,
    QueueStats,
    WaitingDelivery,
)
from pashq.envelope import Envelope

if TYPE_CHECKING:
    from pashq.connection import Connection
    from pashq.lifecycle import DispatchItem
    from pashq.message import Message
    from pashq.processing import Result

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("pashq")
#: Marker for hook implementations in drivers and plugins.
hookimpl = pluggy.HookimplMarker("pashq")


# -------------------------------------------------------------------------------------------
# Lifecycle
# -------------------------------------------------------------------------------------------


@hookspec
def pashq_connect(connection: Connection) -> None:
    """Open the backend for a connection.

    Called once, before any other hook, when the connection is first used. Validate the
    driver options here (``pashq.config.parse_options`` gives errors naming the file and
    key) and raise :class:`~pashq.errors.ConfigError` or :class:`~pashq.errors.DriverError`
    with a message a user can act on. Connecting lazily (on first push or pull) is fine.

    :param connection: the connection being opened: ``connection.name``,
        ``connection.options`` (the driver's keys from ``[queues.<name>]``),
        ``connection.where`` (where that table was read, for error messages).

    Example::

        @hookimpl
        def pashq_connect(self, connection):
            self.options = parse_options(MyOptions, connection.options, connection.where)
    """


@hookspec
def pashq_close() -> None:
    """Release everything the driver holds (connections, threads, sockets).

    Called once when the connection is closed; no hook is called after it.

    Example::

        @hookimpl
        def pashq_close(self):
            self.engine.dispose()
    """


@hookspec(firstresult=True)
def pashq_declare(queue: str) -> None:
    """Make sure a queue exists on the backend (optional).

    Called before a worker starts pulling ``queue``. Drivers whose queues need no
    declaration do not implement it.

    :param queue: the queue name.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_declare(self, queue):
            self.channel.queue_declare(queue, durable=True)
    """


@hookspec(firstresult=True)
def pashq_check_queue_name(queue: str) -> str | None:
    """Say what is wrong with a queue name on this backend, or ``None`` when it is fine.

    Called once per name and connection, before the first push to it and before a worker
    declares it; the core raises :class:`~pashq.errors.QueueNameError` with the answer.
    Check everything the backend will refuse later (length including any suffix the driver
    adds, such as ``.failed``; characters; NUL), so a bad name fails with a clear error
    instead of a broken connection or a raw backend error.

    :param queue: the queue name (a non-empty ``str``; the core checks that much).
    :returns: a short description of the problem, or ``None``.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_check_queue_name(self, queue):
            if len(queue) > 200:
                return f"is {len(queue)} characters long; the most is 200"
            return None
    """


# -------------------------------------------------------------------------------------------
# The data path (batched)
# -------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pashq_push(
    queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
) -> list[str]:
    """Store a batch of messages on ``queue``; return once the backend holds all of them.

    The driver splits the batch into backend calls of at most its ``batch_size``. Return
    only after every message is durably accepted (a commit, a publisher confirm, a
    successful SendMessageBatch entry); if any message could not be stored, raise
    :class:`~pashq.errors.DriverError` naming the ids that failed: never report success
    for a message the backend does not hold. When some backend calls of the batch stored
    their messages and a later one failed, raise
    :class:`~pashq.errors.PartialPushError` with the ``stored`` and ``not_stored`` ids.

    :param queue: the queue name.
    :param messages: the messages, in dispatch order, each with its serialized envelope
        and optional ``delay`` in seconds.
    :param options: driver-specific dispatch options given by the caller
        (``message.dispatch(..., **options)``); reject keys you do not know.
    :returns: the ids of the stored messages, in order.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_push(self, queue, messages, options):
            self.table.insert_many(queue, [(m.id, m.body, m.delay) for m in messages])
            return [m.id for m in messages]
    """


@hookspec(firstresult=True)
def pashq_push_stream(
    queue: str, batches: Iterator[Sequence[OutgoingMessage]], options: Mapping[str, Any]
) -> list[str]:
    """Optional: store messages that the core hands over one batch at a time, as it
    encodes them, so that the backend stores batch k while the core builds batch k + 1.

    The same contract as :func:`pashq_push` for everything the iterator yields: each batch
    holds at most the driver's ``batch_size`` messages, in dispatch order; return the ids
    once the backend holds every message of every batch taken; raise
    :class:`~pashq.errors.PartialPushError` with ``stored`` and ``not_stored`` (the ids of
    the batches taken) when a batch failed after earlier ones were stored. The iterator
    never raises: when the core cannot encode a message it ends the stream early, and
    reports the batches the driver stored. A driver without this hook gets one
    :func:`pashq_push` call with the whole dispatch.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_push_stream(self, queue, batches, options):
            sent = [self.client.send_batch(queue, batch) for batch in batches]
            return [m.id for reply in sent for m in reply.wait()]
    """


@hookspec(firstresult=True)
def pashq_pull(queue: str, max_messages: int, timeout: float) -> list[Delivery]:
    """Reserve up to ``max_messages`` messages from ``queue``.

    Wait up to ``timeout`` seconds for the first message when the queue is empty (long
    polling, LISTEN/NOTIFY, a consumer callback), then return what is available, possibly
    an empty list. Each delivery carries the number of times it has been delivered
    (``attempts``, 1 for the first time) and, where the backend leases messages, the lease
    length in seconds.

    :param queue: the queue name.
    :param max_messages: the most deliveries to return.
    :param timeout: seconds to wait when nothing is available (0 = do not wait). With 0, a
        push-based driver may return [] while deliveries are still in transit: a worker
        running ``until_empty`` stops only after a further pull with a positive timeout
        also returned nothing.
    :returns: the reserved deliveries (empty when there is nothing).

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_pull(self, queue, max_messages, timeout):
            rows = self.claim(queue, max_messages, lease=self.lease)
            return [Delivery(queue, r.id, r.body, r.attempts, r.rowid, self.lease) for r in rows]
    """


@hookspec
def pashq_ack(queue: str, deliveries: Sequence[Delivery]) -> None:
    """Mark a batch of deliveries as done: they are never delivered again.

    :param queue: the queue the deliveries came from.
    :param deliveries: deliveries returned by ``pashq_pull`` and not yet settled.

    Example::

        @hookimpl
        def pashq_ack(self, queue, deliveries):
            self.table.delete_many([d.receipt for d in deliveries])
    """


@hookspec
def pashq_nack(queue: str, deliveries: Sequence[Delivery], delay: float) -> None:
    """Release deliveries so they are delivered again after ``delay`` seconds.

    Used for retries (``delay`` = backoff) and to hand back messages pulled but not started
    at shutdown (``delay`` = 0). The next delivery counts one more attempt. A driver without
    the ``nack_delay`` capability may release at once.

    :param queue: the queue the deliveries came from.
    :param deliveries: deliveries to release.
    :param delay: seconds before they become deliverable again.

    Example::

        @hookimpl
        def pashq_nack(self, queue, deliveries, delay):
            self.table.release([d.receipt for d in deliveries], available_in=delay)
    """


@hookspec
def pashq_dead_letter(queue: str, delivery: Delivery, reason: str, traceback: str | None) -> None:
    """Move one delivery to the dead letters of ``queue`` for good, keeping the reason.

    Must be atomic: the message ends up either still in the queue or among the dead
    letters, never lost and never in both. Must not fail on text: the worker passes
    ``reason`` and ``traceback`` through :func:`pashq.text.safe_text`, other callers may
    not, so store them through it too (a dead letter that fails is redelivered for ever).
    Key it by ``delivery.id``: the worker sets it to the envelope's id once decoded.

    :param queue: the queue the delivery came from.
    :param delivery: the delivery to dead-letter.
    :param reason: a one-line reason (exception text, "validate_message() returned False").
    :param traceback: the formatted traceback, if any.

    Example::

        @hookimpl
        def pashq_dead_letter(self, queue, delivery, reason, traceback):
            with self.transaction() as tx:
                tx.move_to_failed(delivery.receipt, reason, traceback)
    """


@hookspec
def pashq_extend(queue: str, deliveries: Sequence[Delivery], seconds: float) -> None:
    """Extend the lease of deliveries still being processed (heartbeat; optional).

    Called by the worker before a lease runs out, for drivers with ``extend_lease``. The
    worker never calls it while it settles (acks, nacks, dead-letters) a delivery, nor for
    a delivery whose settlement began. A driver whose receipt changes when the lease is
    extended (a renamed file, say) may assign ``delivery.receipt``: the core always
    settles the same ``Delivery`` objects it pulled and never copies them.

    :param queue: the queue the deliveries came from.
    :param deliveries: deliveries still in progress.
    :param seconds: the new lease, counted from now.

    Example::

        @hookimpl
        def pashq_extend(self, queue, deliveries, seconds):
            self.table.set_lease([d.receipt for d in deliveries], seconds)
    """


@hookspec(firstresult=True)
def pashq_queue_empty(queue: str) -> bool | None:
    """Say whether ``queue`` has nothing ready to deliver right now (optional).

    Called by a worker running with ``until_empty`` after a pull of every queue came back
    empty and nothing is in flight. Return ``True`` when nothing is ready (messages
    delayed to a later time and deliveries leased to consumers do not count), ``False``
    when something is, or ``None`` when the driver cannot tell cheaply. On ``True`` the
    worker returns at once; otherwise (and for drivers without this hook) it confirms with
    one more pull that waits up to ``poll_timeout``.

    :param queue: the queue name.
    :returns: ``True``, ``False`` or ``None``.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_queue_empty(self, queue):
            return self.table.count_ready(queue) == 0
    """


@hookspec
def pashq_defer(queue: str, deliveries: Sequence[Delivery], delay: float) -> None:
    """Release deliveries for ``delay`` seconds without counting this delivery (optional).

    Like ``pashq_nack``, but the next delivery's ``attempts`` is the same as this one's:
    the worker defers a message it did not start because a rate limit or a concurrency cap
    was full, and that must not bring it nearer ``max_attempts``. Drivers that keep the
    count in a column or a file name implement it (capability ``defer``); for the others
    the worker pushes a copy of the message (same id and envelope) with the delay, then
    acks the delivery.

    :param queue: the queue the deliveries came from.
    :param deliveries: deliveries to release, none started.
    :param delay: seconds before they become deliverable again.

    Example::

        @hookimpl
        def pashq_defer(self, queue, deliveries, delay):
            self.table.release([d.receipt for d in deliveries], available_in=delay,
                               attempts_minus=1)
    """


# -------------------------------------------------------------------------------------------
# Coordination (optional, capability ``coordination``; see pashq.coordination)
# -------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pashq_lock_acquire(key: str, owner: str, ttl: float, limit: int) -> Acquired:
    """Take one of ``limit`` places on ``key`` for ``ttl`` seconds, unless all are held.

    Atomic across every process and host using the backend: however many callers race,
    at most ``limit`` live holds exist on a key at any instant. A hold is live until
    ``ttl`` seconds after it was taken (or last extended), on the **backend's** clock. An
    ``owner`` that already holds a live place on ``key`` gets it again with a fresh
    ``ttl`` (``taken``; it never holds two). Expired holds count as free.

    :param key: at most :data:`pashq.coordination.KEY_LENGTH` (200) characters; compared
        exactly (case-sensitive).
    :param owner: the holder's token, at most 64 characters (a message id, a uuid).
    :param ttl: seconds the hold lasts (> 0).
    :param limit: places on the key (>= 1): 1 for a lock, N for a semaphore.
    :returns: :class:`~pashq.coordination.Acquired`: ``taken``; the ``holder`` (refused:
        the owner of the live hold that ends first); ``wait``, the seconds until it ends.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_lock_acquire(self, key, owner, ttl, limit):
            with self.transaction() as tx:
                holds = tx.live_holds(key)  # locked, on the server's clock
                if any(h.owner == owner for h in holds) or len(holds) < limit:
                    tx.put_hold(key, owner, expires_in=ttl)
                    return Acquired(True, owner)
                first = min(holds, key=lambda h: h.expires_at)
                return Acquired(False, first.owner, max(first.expires_at - tx.now, 0.001))
    """


@hookspec(firstresult=True)
def pashq_lock_release(key: str, owner: str) -> bool:
    """Give up ``owner``'s hold on ``key``; nobody else's.

    :param key: the key.
    :param owner: the token that took the hold.
    :returns: whether a live hold of ``owner`` was released (``False`` when it had
        expired, was taken over, or never existed).

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_lock_release(self, key, owner):
            return self.table.delete(key=key, owner=owner, live=True) == 1
    """


@hookspec(firstresult=True)
def pashq_lock_extend(key: str, owner: str, ttl: float) -> bool:
    """Make ``owner``'s live hold on ``key`` last ``ttl`` seconds from now.

    :param key: the key.
    :param owner: the token that took the hold.
    :param ttl: the new remaining lifetime, in seconds.
    :returns: whether ``owner`` held it (an expired hold is not revived: take it again).

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_lock_extend(self, key, owner, ttl):
            return self.table.set_expiry(key=key, owner=owner, live=True, expires_in=ttl) == 1
    """


@hookspec(firstresult=True)
def pashq_window_add(key: str, limit: int, period: float) -> float:
    """Count one event on ``key`` unless ``limit`` were counted in the last ``period`` s.

    A sliding window, exact across every caller: at no instant do more than ``limit``
    counted events lie within the last ``period`` seconds (backend clock). A refused event
    is not counted. (Fixed windows keyed by their start would let up to ``2 * limit``
    through in one ``period`` around a boundary, which a rate limit must not.) Storing the
    time of each of the last ``limit`` events is enough: the oldest leaves the window
    ``period`` seconds after it was counted.

    :param key: at most 200 characters.
    :param limit: the most events per ``period`` (>= 1).
    :param period: the window, in seconds (> 0).
    :returns: ``0.0`` when counted; refused, the seconds (``> 0``) until the oldest counted
        event leaves the window, i.e. when to try again.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_window_add(self, key, limit, period):
            with self.transaction() as tx:
                times = tx.recent_events(key, since=tx.now - period)  # locked
                if len(times) < limit:
                    tx.add_event(key, tx.now)
                    return 0.0
                return max(min(times) + period - tx.now, 0.001)
    """


@hookspec(firstresult=True)
def pashq_push_unique(
    queue: str,
    messages: Sequence[OutgoingMessage],
    keys: Sequence[str | None],
    ttls: Sequence[float],
    options: Mapping[str, Any],
) -> list[str]:
    """Push the messages whose unique key is free, taking the key in the same transaction.

    Optional, for drivers that are their own coordination store and can make the check and
    the insert atomic (the database driver). For each message ``i`` with ``keys[i]``
    not ``None``: take the hold ``(keys[i], owner=messages[i].id, ttl=ttls[i], limit=1)``
    as ``pashq_lock_acquire`` would; when taken, store the message; when held, store
    nothing and answer the holder's id. Messages with key ``None`` are stored as
    ``pashq_push`` would. All in one transaction: either every answer holds or nothing was
    written. Without this hook the core takes each key with ``pashq_lock_acquire``, pushes,
    and releases the keys of a push that failed.

    :param queue: the queue name.
    :param messages: the messages, in dispatch order.
    :param keys: each message's unique key, or ``None``.
    :param ttls: each message's ``unique_for`` in seconds (ignored where the key is None).
    :param options: the driver-specific dispatch options, as for ``pashq_push``.
    :returns: per message, its own id when stored, else the id holding its key.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_push_unique(self, queue, messages, keys, ttls, options):
            with self.transaction() as tx:
                out = []
                for m, key, ttl in zip(messages, keys, ttls):
                    got = tx.acquire(key, m.id, ttl) if key else Acquired(True, m.id)
                    if got.taken:
                        tx.insert(queue, m)
                    out.append(got.holder)
                return out
    """


# -------------------------------------------------------------------------------------------
# A message's life (for middleware: implement these as ``wrapper=True``)
# -------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pashq_dispatch(
    queue: str, messages: Sequence[DispatchItem], options: Mapping[str, Any]
) -> list[str]:
    """Around one dispatched batch, before serialization (middleware; ``wrapper=True``).

    The core's own implementation (innermost) serializes each item's envelope and calls
    ``pashq_push``; what it returns are the ids of the stored messages. A wrapper sees the
    :class:`~pashq.lifecycle.DispatchItem` objects (``.message``, ``.envelope``,
    ``.delay``), may add headers to ``item.headers`` before it yields (names starting with
    ``pashq-`` are left to pashq's own plugins), may refuse the batch by raising (nothing is
    pushed; the caller gets the exception), and its timing covers serialization and push.
    Called once per ``dispatch`` / ``dispatch_many`` call, on the dispatching thread.

    :param queue: the queue name.
    :param messages: the batch, in dispatch order.
    :param options: the driver-specific dispatch options.
    :returns: the ids of the stored messages, in order.

    Stops at first non-None result.

    Example::

        @hookimpl(wrapper=True)
        def pashq_dispatch(self, queue, messages, options):
            for item in messages:
                item.headers["tenant"] = current_tenant()
            return (yield)
    """


@hookspec(firstresult=True)
def pashq_process(delivery: Delivery, envelope: Envelope | None, message: Message | None) -> Result:
    """Around one delivery: validate, process and the decision (middleware; wrapper only).

    Implementations must be ``@hookimpl(wrapper=True)`` generators that yield once; the
    core runs the handler as the innermost step and ``yield`` returns the
    :class:`~pashq.processing.Result` (``.outcome`` ack / retry / dead, ``.delay``,
    ``.reason``, ``.exception`` when the attempt raised). What the wrapper returns is the
    decision: the same result, or another (``attrs.evolve(result, outcome=Outcome.RETRY,
    delay=60.0)``). A wrapper raising counts as a failed attempt. The code before and after
    ``yield`` runs in the handler's thread, or for an ``async def`` handler in its task on
    the worker's event loop (so it must not block there), with :func:`pashq.current` set:
    its timing covers the handler's real run time, and context variables it sets are seen
    by the handler. Deliveries settled without running (undecodable, unknown type, a body
    that does not fit, a crash loop past ``max_attempts``) pass through it too, with
    ``envelope`` and ``message`` ``None`` where decoding failed. Deliveries handed back
    unstarted at shutdown do not. The wrappers are taken when a worker run starts.

    :param delivery: the delivery (``.id``, ``.queue``, ``.attempts``).
    :param envelope: the decoded envelope, or ``None``.
    :param message: the message instance, or ``None``.
    :returns: the decision.

    Example::

        @hookimpl(wrapper=True)
        def pashq_process(self, delivery, envelope, message):
            started = time.perf_counter()
            result = yield
            self.observe(delivery.queue, result.outcome, time.perf_counter() - started)
            return result
    """


@hookspec
def pashq_delivery_observer() -> Any:
    """An object told of every delivery a worker handles: a cheaper way to count and time
    than a ``pashq_process`` wrapper (no generator per delivery), for plugins that only
    watch (``pashq work --metrics-port`` uses it).

    Return ``None`` or an object with two methods, called in the thread that runs the
    delivery: ``started(delivery)`` before the handler, and ``finished(delivery, envelope,
    result, seconds)`` after the decision (``envelope`` ``None`` where decoding failed;
    ``result`` ``None`` when the run was interrupted by a stop at once; ``seconds`` the
    handler's time, 0 for a delivery settled without running). The observer cannot change
    the decision; an exception it raises is logged and ignored. Asked for when a worker run
    starts.

    Example::

        @hookimpl
        def pashq_delivery_observer(self):
            return self  # with started() and finished() methods
    """


# -------------------------------------------------------------------------------------------
# Serialization
# -------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pashq_serialize(envelope: Envelope) -> bytes:
    """Turn an envelope into the bytes a driver stores.

    The built-in JSON serializer is registered ``trylast``; a plugin registered before it
    (compression, signing, msgpack) returns its own bytes, or wraps the default with a
    ``wrapper=True`` implementation.

    :param envelope: the envelope to serialize.
    :returns: the bytes to push.

    Stops at first non-None result.

    Example::

        @hookimpl(wrapper=True)
        def pashq_serialize(self, envelope):
            data = yield
            return zlib.compress(data)
    """


@hookspec(firstresult=True)
def pashq_deserialize(data: bytes) -> Envelope:
    """Turn stored bytes back into an envelope.

    Raise :class:`~pashq.errors.EnvelopeError` (and nothing else) for bytes that are not a
    valid envelope: the worker dead-letters them with the reason.

    :param data: the bytes as pulled.
    :returns: the envelope.

    Stops at first non-None result.

    A wrapper cannot change the bytes the inner implementations receive: a plugin that
    transforms the bytes (decompression, signature check) implements the hook itself and
    returns the envelope.

    Example::

        @hookimpl(tryfirst=True)
        def pashq_deserialize(self, data):
            if data.startswith(ZLIB_MAGIC):
                return decode_envelope(zlib.decompress(data))
            return None  # not ours: the JSON default decodes it
    """


# -------------------------------------------------------------------------------------------
# Inspection and administration (optional, declared in capabilities)
# -------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pashq_stats(queue: str) -> QueueStats:
    """Return counts for ``queue`` (capability ``stats``).

    :param queue: the queue name.
    :returns: the counts; ``None`` fields where the backend cannot tell.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_stats(self, queue):
            return QueueStats(queue, ready=self.count(queue))
    """


@hookspec(firstresult=True)
def pashq_purge(queue: str) -> int:
    """Delete every waiting message of ``queue`` (capability ``purge``).

    Dead letters are kept (see ``pashq_failed_purge``).

    :param queue: the queue name.
    :returns: how many messages were deleted (an estimate where the backend cannot count).

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_purge(self, queue):
            return self.table.delete_where(queue=queue)
    """


@hookspec(firstresult=True)
def pashq_queues() -> list[str] | None:
    """Return the names of the queues that exist on the backend (capability ``list_queues``).

    A queue exists when it holds messages or dead letters, or was declared on a backend
    that declares queues. Return pashq queue names (without any prefix or suffix the
    driver adds, and without the driver's own helper queues such as delay or dead-letter
    queues), each once. Return ``None`` when this connection cannot tell (a RabbitMQ
    connection without ``management_url``): the core then uses the connection's
    ``queues = [...]`` key alone. ``Connection.queues()`` adds the configured names to
    the answer and sorts it.

    :returns: the queue names, or ``None``.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_queues(self):
            return sorted(self.table.distinct_queues())
    """


@hookspec(firstresult=True)
def pashq_failed_list(queue: str, limit: int) -> list[DeadLetter]:
    """List dead letters of ``queue``, oldest first (capability ``dead_letters``).

    :param queue: the queue name.
    :param limit: the most dead letters to return.
    :returns: the dead letters.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_failed_list(self, queue, limit):
            return [DeadLetter(r.id, queue, r.body, r.reason) for r in self.failed(queue, limit)]
    """


@hookspec(firstresult=True)
def pashq_failed_retry(queue: str, ids: Sequence[str] | None) -> int:
    """Move dead letters back to ``queue`` as fresh messages (capability ``dead_letters``).

    :param queue: the queue name.
    :param ids: the message ids to retry, or ``None`` for all of them.
    :returns: how many messages were moved back.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_failed_retry(self, queue, ids):
            return self.failed_table.move_back(queue, ids)
    """


@hookspec(firstresult=True)
def pashq_failed_purge(queue: str, ids: Sequence[str] | None) -> int:
    """Delete dead letters of ``queue`` for good (capability ``dead_letters``).

    :param queue: the queue name.
    :param ids: the message ids to delete, or ``None`` for all of them.
    :returns: how many dead letters were deleted.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_failed_purge(self, queue, ids):
            return self.failed_table.delete(queue, ids)
    """


# -------------------------------------------------------------------------------------------
# Moving messages between connections (``pashq move``; optional, declared in capabilities)
# -------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def pashq_claim_waiting(queue: str, max_messages: int) -> list[WaitingDelivery]:
    """Reserve up to ``max_messages`` waiting messages of ``queue``, due or not
    (capability ``claim_waiting``).

    Like ``pashq_pull`` without waiting, except that messages whose delay (or retry
    backoff) has not passed are taken too, each with the seconds until it is due. Leased
    messages (in flight at a worker) are not taken. The reservation is settled with
    ``pashq_ack``; one that is never acked comes back no earlier than the message's due
    time (so a move that dies does not make a delayed message due early).

    :param queue: the queue name.
    :param max_messages: the most messages to reserve.
    :returns: the reservations, due ones first; empty when nothing waits.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_claim_waiting(self, queue, max_messages):
            rows = self.claim(queue, max_messages, lease=self.lease, due_or_not=True)
            return [WaitingDelivery(self.delivery(r), max(0.0, r.due - now)) for r in rows]
    """


@hookspec(firstresult=True)
def pashq_push_moved(queue: str, messages: Sequence[MovedMessage]) -> list[str]:
    """Store messages moved from another connection, keeping their attempt counts
    (capability ``store_attempts``).

    As ``pashq_push`` with no dispatch options (each ``message.message.delay`` is the time
    left until it is due), but the next delivery of each counts ``attempts + 1``. Return
    only once the backend holds every message; raise as ``pashq_push`` does.

    :param queue: the queue name.
    :param messages: the messages, in order.
    :returns: the ids of the stored messages, in order.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_push_moved(self, queue, messages):
            self.table.insert_many(
                queue, [(m.message.id, m.message.body, m.message.delay, m.attempts)
                        for m in messages])
            return [m.message.id for m in messages]
    """


@hookspec(firstresult=True)
def pashq_failed_store(queue: str, dead_letters: Sequence[DeadLetter]) -> list[str]:
    """Keep dead letters moved from another connection among the dead letters of
    ``queue`` (capability ``store_dead_letters``).

    Each keeps its id, body, reason, traceback, attempts and (where the backend stores it)
    ``failed_at``, and is then listed, retried and purged like the driver's own. Return
    once all are stored. A driver that can tell cheaply skips a dead letter whose id it
    already keeps for ``queue`` (a move repeated after a crash) and returns its id too.
    Store text through :func:`pashq.text.safe_text`.

    :param queue: the queue name.
    :param dead_letters: the dead letters (their ``queue`` is the source's queue).
    :returns: the ids now kept, in order.

    Stops at first non-None result.

    Example::

        @hookimpl
        def pashq_failed_store(self, queue, dead_letters):
            self.failed_table.insert_many(queue, dead_letters, skip_known_ids=True)
            return [d.id for d in dead_letters]
    """

"""``pashq.Worker``: pulls messages, runs them, and settles each one by the contract.

Late ack (after ``process_message`` returns), retries with exponential backoff and full
jitter up to ``max_attempts``, dead letters with the reason, a lease heartbeat for long
work, handler threads for ``concurrency > 1`` and graceful shutdown on SIGTERM/SIGINT:
stop pulling, finish what is running (bounded by ``shutdown_timeout``), hand back what was
pulled but not started. A second signal stops at once without acking unfinished work.
"""

from __future__ import annotations

import collections
import logging
import os
import queue as queue_module
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import attrs

from pashq.connection import Connection
from pashq.delivery import Delivery
from pashq.errors import ConfigError, UnsupportedError
from pashq.facade import queue as get_connection
from pashq.processing import Outcome, Processor, Result, close_thread_loop
from pashq.redaction import redact_url

__all__ = ["Worker", "WorkerStats"]

log = logging.getLogger(__name__)
_ACK_FLUSH_SECONDS = 0.5
_HEARTBEAT_SECONDS = 0.2


class _Killed(BaseException):
    """Raised in the worker's thread by a second signal: stop now, settle nothing unfinished."""


@attrs.define
class WorkerStats:
    """Counters of one :meth:`Worker.run`.

    :ivar acked: messages processed successfully.
    :ivar retried: failures released for another attempt.
    :ivar dead_lettered: messages moved to the dead letters.
    :ivar released: messages pulled but handed back unprocessed at shutdown.
    :ivar errors: backend errors (failed pulls or settlements).
    :ivar last_error: the last backend error, if any.
    :ivar consuming: whether the last pull reached the backend.
    :ivar interrupted: whether a second signal stopped the worker at once.
    :ivar started_at: ``time.monotonic()`` at start.
    """

    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    released: int = 0
    errors: int = 0
    last_error: str | None = None
    consuming: bool = False
    interrupted: bool = False
    started_at: float = attrs.field(factory=time.monotonic)

    @property
    def handled(self) -> int:
        """Messages settled by processing (acked, retried or dead-lettered)."""
        return self.acked + self.retried + self.dead_lettered

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as a JSON-ready dict (with ``elapsed`` seconds)."""
        data = attrs.asdict(self)
        data.pop("started_at")
        data["elapsed"] = round(time.monotonic() - self.started_at, 3)
        return data


class Worker:
    """Consumes ``queues`` of one connection.

    :param queues: queue names (or one name).
    :param connection: a configured connection name or a :class:`~pashq.Connection`.
    :param concurrency: handler threads; 1 runs handlers in the calling thread.
    :param batch_size: most messages per pull (default: the driver's batch size).
    :param poll_timeout: seconds a pull may wait for a message before the worker loops.
    :param shutdown_timeout: seconds in-flight work may take after a stop signal.
    :param max_messages: stop after handling this many messages.
    :param install_signal_handlers: handle SIGTERM/SIGINT when run in the main thread.
    :param on_progress: called with :class:`WorkerStats` about twice a second.
    """

    def __init__(
        self,
        queues: Sequence[str] | str,
        *,
        connection: str | Connection = "default",
        concurrency: int = 1,
        batch_size: int | None = None,
        poll_timeout: float = 1.0,
        shutdown_timeout: float = 30.0,
        max_messages: int | None = None,
        install_signal_handlers: bool = True,
        on_progress: Callable[[WorkerStats], None] | None = None,
    ) -> None:
        self.queues = [queues] if isinstance(queues, str) else list(queues)
        if not self.queues or not all(isinstance(q, str) and q for q in self.queues):
            raise ValueError(f"Worker needs at least one queue name, got {queues!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_messages is not None and max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        self._connection_ref = connection
        self._background = False  # set by the async driver for its in-process workers
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.poll_timeout = poll_timeout
        self.shutdown_timeout = shutdown_timeout
        self.max_messages = max_messages
        self.install_signal_handlers = install_signal_handlers
        self.on_progress = on_progress
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._kill = False
        self._finished = threading.Event()
        self._signals = 0
        self._held: dict[Delivery, float] = {}
        self._held_lock = threading.Lock()
        # Held while a delivery is settled (forgotten, then acked/nacked/dead-lettered) and
        # while the heartbeat extends leases: an extension never lands after a settlement.
        self._settle_lock = threading.RLock()
        self._cleaning_up = False  # a stop is being cleaned up: further signals are ignored
        self._timer: threading.Timer | None = None
        self._unstarted: tuple[str, list[Delivery]] = ("", [])
        self._acks: dict[str, list[Delivery]] = {}
        self._ack_since = 0.0
        self._retry_until = 0.0
        self._jobs: queue_module.SimpleQueue[Delivery | None] = queue_module.SimpleQueue()
        self._groups: dict[str, collections.deque[Delivery]] = {}  # FIFO groups running
        self._results: queue_module.SimpleQueue[Result] = queue_module.SimpleQueue()
        self._busy = 0
        self._pull_failures = 0  # consecutive failed pulls: the backoff's exponent
        self._threads: list[threading.Thread] = []
        self._main_thread: int | None = None
        self._last_progress = 0.0

    # -- public control --------------------------------------------------------------------

    def stop(self, *, immediate: bool = False) -> None:
        """Ask the worker to stop (thread-safe).

        Gracefully: no more pulls, running handlers finish and are settled, messages pulled
        but not started are released. ``immediate=True``: additionally do not wait for
        handler threads; what they have not finished stays unacked and returns after its
        lease. A handler running in the worker's own thread (``concurrency=1``) cannot be
        interrupted from another thread: only a signal (``pashq work``) does that.
        """
        if immediate:
            self._kill = True
        self._stop.set()

    @property
    def connection(self) -> Connection:
        """The connection this worker consumes from."""
        ref = self._connection_ref
        return ref if isinstance(ref, Connection) else get_connection(ref)

    def run(self, until_empty: bool = False) -> WorkerStats:
        """Consume until stopped (or, with ``until_empty``, until the queues are drained).

        ``until_empty`` also waits for retries this run scheduled, so a failing message is
        tried ``max_attempts`` times before the run ends. Returns the counters.
        """
        conn = self.connection
        caps = conn.capabilities
        if not caps.consume and not self._background:
            raise UnsupportedError(
                f"connection {conn.name!r} uses driver {conn.config.type!r}, which keeps no "
                "messages for other processes (it runs them in the dispatching process or "
                "drops them): there is nothing for a worker to consume"
            )
        self._conn = conn
        self._hook = conn.hook
        self._processor = Processor(conn.hook, conn.config.retry)
        self._batch = max(1, min(self.batch_size or caps.batch_size, caps.batch_size))
        self._reset_run_state()
        for name in self.queues:
            conn.check_queue_name(name)
            self._hook.pashq_declare(queue=name)
        previous = self._install_signals()
        heartbeat = None
        if caps.extend_lease:
            heartbeat = threading.Thread(
                target=self._heartbeat, args=(self._finished,), name="pashq-heartbeat", daemon=True
            )
            heartbeat.start()
        self._start_threads()
        try:
            self._loop(until_empty)
            self._shutdown()
        except _Killed:
            self._cleaning_up = True
            self.stats.interrupted = True
            log.warning("worker stopped at once; unfinished messages were not acked")
            self._release_queued()
            self._flush_acks()
        except BaseException:
            # SystemExit & co. from a handler: what finished is acked, the rest is released
            # by its lease; then the exception goes on.
            self._cleaning_up = True
            self._release_queued()
            self._flush_acks()
            raise
        finally:
            self._cleaning_up = True
            if self._timer is not None:
                self._timer.cancel()  # a shutdown timer must not fire into a later run
                self._timer = None
            self._stop.set()
            self._finished.set()
            for _ in self._threads:
                self._jobs.put(None)
            self._threads.clear()
            if heartbeat is not None:
                heartbeat.join(timeout=2)
            self._restore_signals(previous)
            if self.concurrency == 1:
                close_thread_loop()  # async handlers ran on this thread's loop
            self._report(force=True)
        return self.stats

    def _reset_run_state(self) -> None:
        """Start a run with nothing left over from an earlier one.

        A run that ended uncleanly (a handler outlived ``shutdown_timeout``, a second signal)
        leaves handler threads behind; they keep the queues and the event they were started
        with, so fresh ones here keep their late results out of this run.
        """
        self.stats = WorkerStats()
        self._stop.clear()
        self._kill = False
        self._finished = threading.Event()
        self._signals = 0
        self._pull_failures = 0
        self._cleaning_up = False
        self._held = {}
        self._acks = {}
        self._ack_since = 0.0
        self._retry_until = 0.0
        self._jobs = queue_module.SimpleQueue()
        self._groups = {}
        self._results = queue_module.SimpleQueue()
        self._busy = 0
        self._threads = []
        self._unstarted = ("", [])

    # -- signals -----------------------------------------------------------------------------

    def _install_signals(self) -> dict[signal.Signals, Any] | None:
        if not self.install_signal_handlers or threading.current_thread() is not (
            threading.main_thread()
        ):
            return None
        self._main_thread = threading.get_ident()
        previous: dict[signal.Signals, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def _restore_signals(self, previous: dict[signal.Signals, Any] | None) -> None:
        if previous:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._main_thread = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._cleaning_up:
            # Already stopping at once: raising here would abandon the acks being flushed.
            log.warning(
                "received %s while stopping; finishing the stop", signal.Signals(signum).name
            )
            return
        self._signals += 1
        if self._signals == 1 and not self._kill:
            log.info(
                "received %s: finishing in-flight work (up to %gs); signal again to stop now",
                signal.Signals(signum).name,
                self.shutdown_timeout,
            )
            self._stop.set()
            self._timer = threading.Timer(self.shutdown_timeout, self._interrupt_main)
            self._timer.daemon = True
            self._timer.start()
            return
        self._kill = True
        self._stop.set()
        raise _Killed()

    def _interrupt_main(self) -> None:
        if self._main_thread is not None and not self._kill and not self._cleaning_up:
            log.warning("shutdown timeout of %gs passed; stopping at once", self.shutdown_timeout)
            # A real signal (not interrupt_main) also interrupts a blocking sleep or read.
            os.kill(os.getpid(), signal.SIGINT)

    # -- the loop ----------------------------------------------------------------------------

    def _want(self) -> int:
        want = self._batch
        if self.concurrency > 1:
            want = min(want, 2 * self.concurrency - len(self._held))
        if self.max_messages is not None:
            want = min(want, self.max_messages - self.stats.handled - len(self._held))
        return want

    def _done(self) -> bool:
        return self.max_messages is not None and self.stats.handled >= self.max_messages

    def _loop(self, until_empty: bool) -> None:
        queues = self.queues
        wait = self.poll_timeout / len(queues)
        confirming = False  # until_empty: one more round with a real wait before stopping
        while not self._stop.is_set() and not self._done():
            pulled = False
            for name in queues:
                if self._stop.is_set():
                    break
                want = self._want()
                if want <= 0:
                    self._collect(block=True)
                    continue
                timeout = wait
                if until_empty and not confirming:
                    timeout = 0.0
                    if self._retry_until:
                        timeout = min(wait, max(0.0, self._retry_until - time.monotonic()))
                deliveries = self._pull(name, want, timeout)
                if deliveries:
                    pulled = True
                    self._handle(name, deliveries)
            self._collect(block=False)
            self._flush_acks()
            self._report()
            drained = not pulled and not self._held and not self._busy
            if until_empty and drained and self._retry_until <= time.monotonic():
                self._retry_until = 0.0
                if confirming:
                    break
                confirming = True
                continue
            confirming = False

    def _pull(self, name: str, want: int, timeout: float) -> list[Delivery]:
        try:
            deliveries: list[Delivery] | None = self._hook.pashq_pull(
                queue=name, max_messages=want, timeout=timeout
            )
        except (ConfigError, UnsupportedError):
            raise
        except Exception as exc:
            self._backend_error(f"pull from {name!r}", exc)
            # Drivers reconnect inside pull; this only keeps a dead backend from spinning.
            self._stop.wait(min(5.0, 0.25 * 2 ** min(self._pull_failures, 5)))
            self._pull_failures += 1
            return []
        self._pull_failures = 0
        self.stats.consuming = True
        if not deliveries:
            return []
        now = time.monotonic()
        with self._held_lock:
            for d in deliveries:
                self._held[d] = now + (d.lease or 0.0)
        return deliveries

    def _backend_error(self, what: str, exc: Exception) -> None:
        self.stats.errors += 1
        self.stats.consuming = False
        # Client errors may quote a URL with its password (botocore's "Could not connect to
        # the endpoint URL"): redact the text and the traceback the log shows.
        text = redact_url(str(exc))
        self.stats.last_error = f"{what}: {type(exc).__name__}: {text}"
        if self.stats.errors == 1:
            text += "\n" + redact_url("".join(traceback.format_exception(exc)).rstrip())
        log.warning("%s failed on connection %r: %s", what, self._conn.name, text)

    def _handle(self, name: str, deliveries: list[Delivery]) -> None:
        if self.concurrency > 1:
            for d in deliveries:
                self._busy += 1
                if d.group is None:
                    self._jobs.put(d)
                elif d.group in self._groups:  # its group is running: wait behind it
                    self._groups[d.group].append(d)
                else:
                    self._groups[d.group] = collections.deque()
                    self._jobs.put(d)
            return
        run = self._processor.run
        failed_groups: set[str] = set()
        for index, delivery in enumerate(deliveries):
            # What a stop at once (a second signal raised in the handler) must hand back.
            self._unstarted = (name, deliveries[index + 1 :])
            if self._stop.is_set():
                self._release(name, deliveries[index:])
                break
            if delivery.group is not None and delivery.group in failed_groups:
                self._release(name, [delivery])  # keep the group's order behind the retry
                continue
            result = run(delivery)
            if delivery.group is not None and result.outcome is not Outcome.ACK:
                failed_groups.add(delivery.group)
            self._settle(result)
        self._unstarted = ("", [])
        self._flush_acks()

    def _start_threads(self) -> None:
        if self.concurrency == 1:
            return
        for number in range(self.concurrency):
            thread = threading.Thread(
                target=self._thread_main,
                args=(self._jobs, self._results),
                name=f"pashq-handler-{number}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def _thread_main(
        self,
        jobs: queue_module.SimpleQueue[Delivery | None],
        results: queue_module.SimpleQueue[Result],
    ) -> None:
        # The queues are this run's: a thread that outlives its run never feeds a later one.
        run = self._processor.run
        stop = self._stop
        while True:
            delivery = jobs.get()
            if delivery is None:
                close_thread_loop()
                return
            if stop.is_set() or results is not self._results:
                # Pulled but not started: hand it back through the main thread.
                results.put(Result(delivery, Outcome.RELEASE))
                continue
            try:
                results.put(run(delivery))
            except BaseException as exc:  # SystemExit & co. from a handler: stop the worker
                log.error("handler raised %s; stopping the worker", type(exc).__name__)
                results.put(Result(delivery, Outcome.RELEASE))
                if results is self._results:
                    self.stop()

    def _next_in_group(self, result: Result) -> None:
        """Start the next delivery of a FIFO group, or after a failure hand them all back."""
        group = result.delivery.group
        if group is None or group not in self._groups:
            return
        waiting = self._groups[group]
        if result.outcome is Outcome.ACK and waiting and not self._stop.is_set():
            self._jobs.put(waiting.popleft())
            return
        del self._groups[group]
        if waiting:
            self._busy -= len(waiting)
            self._release(result.delivery.queue, list(waiting))

    def _collect(self, block: bool) -> None:
        if self.concurrency == 1:
            return
        timeout = 0.2 if block else None
        while self._busy:
            try:
                result = (
                    self._results.get(timeout=timeout) if timeout else (self._results.get_nowait())
                )
            except queue_module.Empty:
                return
            self._busy -= 1
            timeout = None
            self._next_in_group(result)
            if result.outcome is Outcome.RELEASE:
                self._release(result.delivery.queue, [result.delivery])
            else:
                self._settle(result)

    # -- settling ------------------------------------------------------------------------------

    def _forget(self, deliveries: Sequence[Delivery]) -> None:
        with self._held_lock:
            for d in deliveries:
                self._held.pop(d, None)

    def _settle(self, result: Result) -> None:
        with self._settle_lock:
            self._settle_locked(result)
        if self._ack_since and time.monotonic() - self._ack_since > _ACK_FLUSH_SECONDS:
            self._flush_acks()

    def _settle_locked(self, result: Result) -> None:
        delivery = result.delivery
        name = delivery.queue
        if result.outcome is not Outcome.ACK:
            self._forget((delivery,))  # acked ones are forgotten when the ack is flushed
        try:
            if result.outcome is Outcome.ACK:
                pending = self._acks.setdefault(name, [])
                if not pending and not self._ack_since:
                    self._ack_since = time.monotonic()
                pending.append(delivery)
                self.stats.acked += 1
                if len(pending) >= self._batch:
                    self._flush_acks()
            elif result.outcome is Outcome.RETRY:
                self._hook.pashq_nack(queue=name, deliveries=[delivery], delay=result.delay)
                self.stats.retried += 1
                self._retry_until = max(self._retry_until, time.monotonic() + result.delay)
                log.info(
                    "message %s on %r failed (attempt %d), retrying in %.2fs: %s",
                    delivery.id,
                    name,
                    delivery.attempts,
                    result.delay,
                    result.reason,
                )
            else:
                self._hook.pashq_dead_letter(
                    queue=name, delivery=delivery, reason=result.reason, traceback=result.traceback
                )
                self.stats.dead_lettered += 1
                log.warning("message %s on %r dead-lettered: %s", delivery.id, name, result.reason)
        except Exception as exc:
            self._backend_error(f"settling message {delivery.id} on {name!r}", exc)

    def _flush_acks(self) -> None:
        self._ack_since = 0.0
        if not self._acks:
            return
        with self._settle_lock:
            acks, self._acks = self._acks, {}
            for name, deliveries in acks.items():
                try:
                    self._hook.pashq_ack(queue=name, deliveries=deliveries)
                except Exception as exc:
                    self._backend_error(f"ack of {len(deliveries)} message(s) on {name!r}", exc)
                self._forget(deliveries)

    def _release(self, name: str, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        with self._settle_lock:
            self._forget(deliveries)
            try:
                self._hook.pashq_nack(queue=name, deliveries=list(deliveries), delay=0.0)
                self.stats.released += len(deliveries)
            except Exception as exc:
                self._backend_error(f"release of {len(deliveries)} message(s) on {name!r}", exc)

    def _release_queued(self) -> None:
        """Hand back deliveries pulled but not started (queued for a thread, or the rest of
        the batch the worker's own thread was running)."""
        name, rest = self._unstarted
        self._unstarted = ("", [])
        if rest:
            self._release(name, rest)
        queued: list[Delivery] = []
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue_module.Empty:
                break
            if item is not None:
                queued.append(item)
        for waiting in self._groups.values():  # FIFO deliveries waiting behind their group
            queued.extend(waiting)
        self._groups.clear()
        self._busy -= len(queued)
        by_queue: dict[str, list[Delivery]] = {}
        for delivery in queued:
            by_queue.setdefault(delivery.queue, []).append(delivery)
        for name, deliveries in by_queue.items():
            self._release(name, deliveries)

    def _shutdown(self) -> None:
        if self.concurrency > 1 and self._busy:
            if self._kill:
                self._release_queued()
            else:
                deadline = time.monotonic() + self.shutdown_timeout
                while self._busy and time.monotonic() < deadline:
                    self._collect(block=True)
                self._release_queued()
            self._collect(block=False)
            if self._busy:
                log.warning(
                    "%d message(s) still running at shutdown; not acked (their lease returns them)",
                    self._busy,
                )
        self._flush_acks()

    # -- heartbeat and progress ---------------------------------------------------------------

    def _heartbeat(self, finished: threading.Event) -> None:
        # Runs until run() returns: after a stop signal it keeps extending the leases of
        # work still in flight, so graceful shutdown does not cause redeliveries.
        while not finished.wait(_HEARTBEAT_SECONDS):
            with self._settle_lock:  # nothing is settled between the snapshot and the extension
                if finished.is_set():
                    return
                self._extend_due()

    def _extend_due(self) -> None:
        now = time.monotonic()
        due: dict[str, list[Delivery]] = {}
        with self._held_lock:
            for delivery, deadline in self._held.items():
                if delivery.lease and deadline - now < delivery.lease / 2:
                    due.setdefault(delivery.queue, []).append(delivery)
        for name, deliveries in due.items():
            seconds = max(d.lease or 0.0 for d in deliveries)
            try:
                self._hook.pashq_extend(queue=name, deliveries=deliveries, seconds=seconds)
            except Exception as exc:
                self._backend_error(f"lease extension on {name!r}", exc)
                continue
            with self._held_lock:
                for d in deliveries:
                    if d in self._held:
                        self._held[d] = now + (d.lease or 0.0)

    def _report(self, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_progress >= 0.5:
            self._last_progress = now
            self.on_progress(self.stats)

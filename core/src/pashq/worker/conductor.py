"""``pashq.Worker``: pulls messages, runs them, and settles each one by the contract.

The worker is a thin conductor over small parts: :mod:`~pashq.worker.prefetch` (how many
messages to hold), :mod:`~pashq.worker.execution` (a thread pool for sync handlers, one
event loop for async ones), :mod:`~pashq.worker.settlement` (batched acks, nacks and dead
letters, retried with backoff), :mod:`~pashq.worker.heartbeat` (lease extension and the
time-limit watchdog) and :mod:`~pashq.worker.signals` (graceful stop, then stop at once).
Late ack (after ``process_message`` returns), retries with exponential backoff and full
jitter up to ``max_attempts``, dead letters with the reason.
"""

from __future__ import annotations

import collections
import logging
import queue as queue_module
import time
from collections.abc import Callable, Sequence

import attrs

from pashq.connection import Connection
from pashq.delivery import Delivery
from pashq.errors import ConfigError, UnsupportedError
from pashq.facade import import_messages
from pashq.facade import queue as get_connection
from pashq.limits import Gate
from pashq.processing import Outcome, Prepared, Processor, Result, close_thread_loop
from pashq.worker.collector import frozen_heap
from pashq.worker.execution import Done, Executor
from pashq.worker.heartbeat import Supervisor
from pashq.worker.prefetch import Prefetch
from pashq.worker.settlement import Settlement
from pashq.worker.signals import Killed, StopControl
from pashq.worker.stats import WorkerStats

__all__ = ["Worker"]

log = logging.getLogger("pashq.worker")
_EMPTY_PULL_PAUSE = 0.25  # most seconds between non-blocking pulls that found nothing
_BATCHED_WAKEUPS = 0.001  # handlers shorter than this: collect their results every 1 ms
_START_DELAY_MAX = 30.0  # seconds between tries to reach a backend that is down at start


class Worker:
    """Consumes ``queues`` of one connection.

    :param queues: queue names (or one name).
    :param connection: a configured connection name or a :class:`~pashq.Connection`.
    :param concurrency: handlers in flight: threads for sync handlers, tasks on the worker's
        event loop for ``async def`` ones; 1 runs sync handlers in the calling thread.
    :param batch_size: most messages per pull (default: the driver's batch size).
    :param prefetch: most messages held (running and waiting); default: adapts to how fast
        handlers finish (see docs/worker-and-cli.md, "Prefetch").
    :param time_limit: seconds a handler may run, for classes without their own
        ``time_limit`` (default: the connection's ``time_limit``, else none).
    :param poll_timeout: seconds a pull may wait for a message before the worker loops.
    :param shutdown_timeout: seconds in-flight work may take after a stop signal.
    :param max_messages: stop after handling this many messages.
    :param fail_fast: raise when the backend cannot be reached at start instead of waiting.
    :param install_signal_handlers: handle SIGTERM/SIGINT when run in the main thread.
    :param on_progress: called with :class:`WorkerStats` about twice a second.
    :param freeze_gc: leave the objects that exist when the run starts out of the garbage
        collector's full collections for the run (:mod:`pashq.worker.collector`).
    """

    def __init__(
        self,
        queues: Sequence[str] | str,
        *,
        connection: str | Connection = "default",
        concurrency: int = 1,
        batch_size: int | None = None,
        prefetch: int | None = None,
        time_limit: float | None = None,
        poll_timeout: float = 1.0,
        shutdown_timeout: float = 30.0,
        max_messages: int | None = None,
        fail_fast: bool = False,
        install_signal_handlers: bool = True,
        on_progress: Callable[[WorkerStats], None] | None = None,
        freeze_gc: bool = True,
    ) -> None:
        self.queues = [queues] if isinstance(queues, str) else list(queues)
        if not self.queues or not all(isinstance(q, str) and q for q in self.queues):
            raise ValueError(f"Worker needs at least one queue name, got {queues!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_messages is not None and max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        if prefetch is not None and prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        if time_limit is not None and not time_limit > 0:
            raise ValueError(f"time_limit must be > 0 seconds, got {time_limit}")
        self._connection_ref = connection
        self._background = False  # set by the async driver for its in-process workers
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.prefetch = prefetch
        self.time_limit = time_limit
        self.poll_timeout = poll_timeout
        self.shutdown_timeout = shutdown_timeout
        self.max_messages = max_messages
        self.fail_fast = fail_fast
        self.install_signal_handlers = install_signal_handlers
        self.on_progress = on_progress
        self.freeze_gc = freeze_gc
        self.stats = WorkerStats()
        self._control = StopControl(shutdown_timeout)
        self._running = False
        self._stop_pending = 0  # stop() before run(): 1 graceful, 2 at once
        self._groups: dict[str, collections.deque[Prepared]] = {}  # FIFO groups running
        self._waiting = 0  # deliveries waiting behind their FIFO group
        self._busy = 0  # submitted to the executor, not yet collected
        # The batch the worker's own thread is running, and the index of its first delivery
        # not started yet (what a stop at once must hand back).
        self._unstarted: tuple[str, list[Delivery]] = ("", [])
        self._unstarted_from = 0
        self._pull_failures = 0  # consecutive failed pulls: the backoff's exponent
        self._next_pull = 0.0
        self._last_progress = 0.0

    # -- public control --------------------------------------------------------------------

    def stop(self, *, immediate: bool = False) -> None:
        """Ask the worker to stop (thread-safe).

        Gracefully: no more pulls, running handlers finish and are settled, messages pulled
        but not started are released. ``immediate=True``: additionally do not wait for
        running handlers (async ones are cancelled); what they have not finished stays
        unacked and returns after its lease, and ``stats.interrupted`` is set. A sync
        handler running in the worker's own thread (``concurrency=1``) finishes first: only
        a signal (``pashq work``) interrupts it. Called before :meth:`run` starts (a signal
        while ``pashq work`` is still starting), the next run stops as soon as it starts.
        """
        if self._running:
            self._control.request(immediate)
        else:  # asked before run() started: that run stops at once
            self._stop_pending = max(self._stop_pending, 2 if immediate else 1)

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
        if not isinstance(self._connection_ref, Connection):
            # A configured connection: load the config's `imports`, as `pashq work` does.
            import_messages()
        caps = conn.capabilities
        if not caps.consume and not self._background:
            raise UnsupportedError(
                f"connection {conn.name!r} uses driver {conn.config.type!r}, which keeps no "
                "messages for other processes (it runs them in the dispatching process or "
                "drops them): there is nothing for a worker to consume"
            )
        for name in self.queues:
            conn.check_queue_name(name)
        self._conn = conn
        self._hook = conn.hook
        policy = conn.config.retry
        if self.time_limit is not None:
            policy = attrs.evolve(policy, time_limit=self.time_limit)
        self._processor = Processor(conn.hook, policy, conn.name, Gate(conn))
        self._batch = max(1, min(self.batch_size or caps.batch_size, caps.batch_size))
        control = self._control
        self._reset_run_state()
        self._running = True
        if self._stop_pending:  # after the reset, which forgets an earlier run's stop
            control.request(immediate=self._stop_pending > 1)
            self._stop_pending = 0
        control.install(self.install_signal_handlers)
        supervisor = Supervisor(self._settlement, self._executor, caps.extend_lease)
        heap = frozen_heap(self.freeze_gc)
        heap.__enter__()
        try:
            try:
                if self._declare():
                    supervisor.start()
                    self._loop(until_empty)
                self._shutdown()
            except Killed:
                control.cleaning_up = True
                self.stats.interrupted = True
                log.warning("worker stopped at once; unfinished messages were not acked")
                self._executor.interrupt()
                self._release_unstarted()
                self._collect(block=False)
                self._settlement.drain(time.monotonic() + 2.0)
            except BaseException:
                # SystemExit & co. from a handler: what finished is acked, the rest is
                # released or left to its lease; then the exception goes on.
                control.cleaning_up = True
                self._release_unstarted()
                self._collect(block=False)
                self._settlement.drain(time.monotonic() + 2.0)
                raise
        finally:
            heap.__exit__(None, None, None)
            self._running = False
            control.cleaning_up = True
            control.restore()
            control.stop.set()
            supervisor.stop()
            self._executor.close()
            self._processor.gate.close()  # type: ignore[union-attr]
            if self.concurrency == 1:
                close_thread_loop()  # validate_message coroutines ran on this thread's loop
            self._report(force=True)
        return self.stats

    def _reset_run_state(self) -> None:
        """Start a run with nothing left over from an earlier one.

        A run that ended uncleanly (a handler outlived ``shutdown_timeout``, a second signal)
        leaves handlers behind; they keep the executor (and its results queue) they were
        started with, so the fresh ones here keep their late results out of this run.
        """
        self.stats = WorkerStats()
        self._control.reset()
        self._settlement = Settlement(
            self._hook,
            self.stats,
            self._batch,
            self._conn.name,
            self._conn.capabilities.delay_resolution,
        )
        self._executor = Executor(
            self._processor,
            self.concurrency,
            self._control.stop,
            on_fatal=self.stop,
        )
        self._prefetch = Prefetch(self.concurrency, self._batch, self.prefetch)
        self._groups = {}
        self._waiting = 0
        self._busy = 0
        self._unstarted = ("", [])
        self._pull_failures = 0
        self._next_pull = 0.0
        self._empty_hook = True

    def _declare(self) -> bool:
        """Declare the queues; while the backend is down, wait and try again (unless
        ``fail_fast``). Returns False when stopped meanwhile."""
        tries = 0
        while True:
            try:
                for name in self.queues:
                    self._hook.pashq_declare(queue=name)
                if tries:
                    log.info("backend of connection %r reached; consuming", self._conn.name)
                return True
            except (ConfigError, UnsupportedError):
                raise
            except Exception as exc:
                if self.fail_fast:
                    raise
                self._settlement.backend_error("declaring the queues", exc)
                delay = min(_START_DELAY_MAX, 0.5 * 2**tries)
                tries += 1
                log.warning(
                    "backend of connection %r unavailable at start; trying again in %gs",
                    self._conn.name,
                    delay,
                )
                if self._control.stop.wait(delay):
                    return False

    # -- the loop ----------------------------------------------------------------------------

    @property
    def _inflight(self) -> int:
        """Pulled and not yet settled: running, waiting behind a group, or unstarted."""
        return self._busy + self._waiting

    def _done(self) -> bool:
        return self.max_messages is not None and self.stats.handled >= self.max_messages

    def _want(self) -> int:
        inflight = self._inflight
        idle = self._busy < self.concurrency and not self._waiting
        want = self._prefetch.want(inflight, idle)
        if self.max_messages is not None:
            want = min(want, self.max_messages - self.stats.handled - inflight)
        return want

    def _loop(self, until_empty: bool) -> None:
        queues = self.queues
        wait = self.poll_timeout / len(queues)
        stop = self._control.stop
        settlement = self._settlement
        confirming = False  # until_empty without a driver's answer: one more waiting round
        short = False  # the last round's pulls all brought fewer messages than asked
        found_none = False  # ... and none brought anything
        while not stop.is_set() and not self._done():
            said = None
            if until_empty and short and not confirming and self._drained():
                # Ask the driver. When it says empty after a round that found nothing, that
                # round was the last look; after a short one, one more pull without waiting
                # (for a message on its way to this consumer) is.
                said = self._driver_says_empty()
                if said:
                    if found_none:
                        break
                    short = found_none = True
                    if not self._last_look():
                        break
                    found_none = False
                    continue
            pulled = empty = 0
            short = True
            for name in queues:
                if stop.is_set():
                    break
                want = self._want()
                if want <= 0:
                    short = False
                    break
                now = time.monotonic()
                if self._inflight:
                    if now < self._next_pull:
                        short = False
                        break  # nothing came last time: let the handlers work a while
                    timeout = 0.0
                else:
                    settlement.flush()  # idle: nothing may wait for the next flush
                    timeout = wait
                    if until_empty and not confirming:
                        timeout = min(wait, max(0.0, settlement.retry_until - now))
                    retry_at = settlement.next_retry()
                    if retry_at is not None:
                        timeout = min(timeout, max(0.0, retry_at - now))
                if settlement.acks:
                    settlement.flush()  # frees a broker's prefetch window before asking more
                deliveries = self._pull(name, want, timeout)
                if deliveries:
                    pulled += len(deliveries)
                    if len(deliveries) >= want:
                        short = False
                    self._handle(name, deliveries)
                else:
                    empty += 1
            found_none = empty == len(queues) and not pulled
            if empty and not pulled and self._inflight:
                # Nothing came: pull again once about one handler's time passed.
                pause = min(_EMPTY_PULL_PAUSE, max(0.01, self._prefetch.average or 0.0))
                self._next_pull = max(self._next_pull, time.monotonic() + pause)
            self._collect(block=self._busy > 0 and (not pulled or self._want() <= 0))
            if not self._inflight:
                settlement.flush()
            settlement.flush_due()
            self._report()
            if not until_empty or pulled or self._inflight or settlement.busy:
                confirming = False
                continue
            if empty < len(queues) or settlement.retry_until > time.monotonic():
                continue
            settlement.retry_until = 0.0
            if confirming:
                break
            if said is None and self._empty_hook:
                continue  # the next round asks the driver
            confirming = True  # no answer from the driver: one more round that waits

    def _drained(self) -> bool:
        """Nothing in flight, nothing to settle, no retry of this run still to come."""
        settlement = self._settlement
        return (
            not self._inflight
            and not settlement.busy
            and settlement.retry_until <= time.monotonic()
        )

    def _last_look(self) -> bool:
        """One pull of each queue without waiting; whether it found anything (handled)."""
        found = False
        for name in self.queues:
            want = self._want()
            if want > 0:
                deliveries = self._pull(name, want, 0.0)
                if deliveries:
                    found = True
                    self._handle(name, deliveries)
        return found

    def _driver_says_empty(self) -> bool | None:
        """Whether the driver says every queue has nothing ready (``pashq_queue_empty``):
        None when it cannot tell (then it is not asked again this run)."""
        try:
            for name in self.queues:
                answer = self._hook.pashq_queue_empty(queue=name)
                if answer is None:
                    self._empty_hook = False
                    return None
                if answer is not True:
                    return False
        except Exception as exc:
            self._settlement.backend_error("empty check", exc)
            return False
        return True

    def _pull(self, name: str, want: int, timeout: float) -> list[Delivery]:
        try:
            deliveries: list[Delivery] | None = self._hook.pashq_pull(
                queue=name, max_messages=want, timeout=timeout
            )
        except (ConfigError, UnsupportedError):
            raise
        except Exception as exc:
            self._settlement.backend_error(f"pull from {name!r}", exc)
            # Drivers reconnect inside pull; this only keeps a dead backend from spinning.
            self._control.stop.wait(min(5.0, 0.25 * 2 ** min(self._pull_failures, 5)))
            self._pull_failures += 1
            return []
        self._pull_failures = 0
        self.stats.consuming = True
        if not deliveries:
            return []
        self._settlement.hold(deliveries)
        return deliveries

    def _handle(self, name: str, deliveries: list[Delivery]) -> None:
        if self.concurrency == 1:
            self._handle_here(name, deliveries)
            return
        prepare, settle = self._processor.prepare, self._settlement.settle
        for d in deliveries:
            prepared = prepare(d)
            if isinstance(prepared, Result):
                settle(prepared)  # poison or a crash loop: settled without running
            elif d.group is None:
                self._submit(prepared)
            elif d.group in self._groups:  # its group is running: wait behind it
                self._groups[d.group].append(prepared)
                self._waiting += 1
            else:
                self._groups[d.group] = collections.deque()
                self._submit(prepared)

    def _submit(self, prepared: Prepared) -> None:
        self._busy += 1
        self._executor.submit(prepared)

    def _handle_here(self, name: str, deliveries: list[Delivery]) -> None:
        """``concurrency=1``: run the batch in order; sync handlers without a time limit in
        this thread, the others on the executor (waiting for each)."""
        processor = self._processor
        # A plain processor prepares and runs a sync delivery in one call (run_plain).
        prepare = processor.run_plain if processor.plain else processor.prepare
        execute = processor.execute
        settle, ack, observe = self._settlement.settle, self._settlement.ack, self._prefetch.observe
        flush_due, monotonic = self._settlement.flush_due, time.monotonic
        stop = self._control.stop
        failed_groups: set[str] = set()
        count = len(deliveries)
        self._waiting = count
        self._unstarted_from = 0
        self._unstarted = (name, deliveries)
        for index, delivery in enumerate(deliveries):
            # What a stop at once (a second signal raised in the handler) must hand back:
            # the deliveries after this one (an index, not a copy of the rest per message).
            self._unstarted_from = index + 1
            self._waiting = count - index
            if stop.is_set():
                self._unstarted = ("", [])
                self._waiting = 0
                self._settlement.release(name, deliveries[index:])
                return
            if delivery.group is not None and delivery.group in failed_groups:
                self._settlement.release(name, [delivery])  # keep the group's order
                continue
            started = monotonic()
            prepared = prepare(delivery)
            result: Result | None
            if prepared is None:  # run by run_plain, and it succeeded
                observe(monotonic() - started)
                ack(delivery)
                flush_due()
                continue
            if isinstance(prepared, Result):
                result = prepared  # run by run_plain, or settled without running
                observe(monotonic() - started)
            elif prepared.is_async or prepared.policy.time_limit:
                self._waiting -= 1
                self._submit(prepared)
                result = self._wait_one()
            else:
                started = monotonic()
                result = execute(prepared)
                observe(monotonic() - started)
            if result is None:
                continue  # stopped at once
            if delivery.group is not None and result.outcome is not Outcome.ACK:
                failed_groups.add(delivery.group)
            settle(result)
            flush_due()
        self._unstarted = ("", [])
        self._waiting = 0

    def _wait_one(self) -> Result | None:
        """Wait for the one submitted delivery (``concurrency=1``)."""
        while True:
            try:
                done = self._executor.results.get(timeout=0.2)
            except queue_module.Empty:
                if self._control.kill:  # stop(immediate=True): cancel an async handler
                    self._executor.interrupt()
                    self._busy -= 1
                    return None
                continue
            self._executor.collected(done)
            result = done.result
            if result is None:
                continue  # a handler thread given up at its time limit: not this one
            self._busy -= 1
            if result.outcome is not Outcome.RELEASE:
                self._prefetch.observe(done.seconds)
            if result.timed_out:
                self.stats.timed_out += 1
            return result

    def _next_in_group(self, result: Result) -> None:
        """Start the next delivery of a FIFO group, or after a failure hand them all back."""
        group = result.delivery.group
        if group is None or group not in self._groups:
            return
        waiting = self._groups[group]
        if result.outcome is Outcome.ACK and waiting and not self._control.stop.is_set():
            self._waiting -= 1
            self._submit(waiting.popleft())
            return
        del self._groups[group]
        if waiting:
            self._waiting -= len(waiting)
            self._settlement.release(result.delivery.queue, [p.delivery for p in waiting])

    def _collect(self, block: bool, timeout: float = 0.2) -> None:
        results = self._executor.results
        settle, observe = self._settlement.settle, self._prefetch.observe
        wait: float | None = timeout if block else None
        average = self._prefetch.average
        if block and average is not None and average < _BATCHED_WAKEUPS and results.empty():
            # Short handlers: let a few results pile up instead of waking up for each one
            # (a wake-up costs about as much as a trivial handler).
            time.sleep(_BATCHED_WAKEUPS)
        while self._busy:
            try:
                done: Done = results.get(timeout=wait) if wait else results.get_nowait()
            except queue_module.Empty:
                return
            wait = None
            self._executor.collected(done)
            result = done.result
            if result is None:  # a handler thread given up at its time limit: a notice
                continue
            self._busy -= 1
            if result.outcome is not Outcome.RELEASE:
                observe(done.seconds)
            if result.timed_out:
                self.stats.timed_out += 1
            self._next_in_group(result)
            settle(result)

    # -- stopping ------------------------------------------------------------------------------

    def _release_unstarted(self) -> None:
        """Hand back deliveries pulled but not started (queued for a thread, waiting behind
        a FIFO group, or the rest of the batch the worker's own thread was running)."""
        name, batch = self._unstarted
        rest = batch[self._unstarted_from :]
        self._unstarted = ("", [])
        if rest:
            self._settlement.release(name, rest)
        queued = self._executor.take_unstarted()
        self._busy -= len(queued)
        for waiting in self._groups.values():  # FIFO deliveries waiting behind their group
            queued.extend(p.delivery for p in waiting)
        self._groups.clear()
        self._waiting = 0
        by_queue: dict[str, list[Delivery]] = {}
        for delivery in queued:
            by_queue.setdefault(delivery.queue, []).append(delivery)
        for queue_name, deliveries in by_queue.items():
            self._settlement.release(queue_name, deliveries)

    def _shutdown(self) -> None:
        control = self._control
        if self._busy or self._waiting:
            self._release_unstarted()
            if not control.kill:
                deadline = time.monotonic() + self.shutdown_timeout
                while self._busy and time.monotonic() < deadline and not control.kill:
                    self._collect(
                        block=True, timeout=min(0.2, max(0.01, deadline - time.monotonic()))
                    )
                    self._settlement.flush_due()
            if self._busy:
                self._executor.interrupt()
                self._collect(block=True, timeout=0.05)
                self._collect(block=False)
        if control.kill:
            self.stats.interrupted = True
        if self._busy:
            log.warning(
                "%d message(s) still running at shutdown; not acked (their lease returns them)",
                self._busy,
            )
        self._settlement.drain(
            time.monotonic() + min(self.shutdown_timeout, 15.0), lambda: control.kill
        )

    # -- progress ------------------------------------------------------------------------------

    def _report(self, force: bool = False) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_progress >= 0.5:
            self._last_progress = now
            self.on_progress(self.stats)

"""Execution: sync handlers on a pool of threads, ``async def`` handlers on one event loop.

``concurrency`` bounds each kind: at most that many sync handlers run (one thread each,
started as sync work arrives) and at most that many async handlers are in flight as tasks
on the worker's single event loop (its own thread). Results go to the run's results queue
as :class:`Done`; a thread or task left over from an earlier run keeps its own queue, so
it never feeds a later run.

Time limits: an async handler runs under :func:`asyncio.timeout`; for a sync handler the
watchdog (:meth:`Executor.check_limits`, called by the supervisor thread) raises
:class:`~pashq.TimeLimitExceeded` in its thread. A thread that does not come back within
:data:`STUCK_GRACE` seconds (blocked in C code, or swallowing the exception) is given up:
a new thread takes its place. Either way the delivery was settled as a failed attempt at
its limit (the thread's late result is dropped), so its lease is no longer extended.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import queue as queue_module
import threading
import time
from collections.abc import Callable

import attrs

from pashq.delivery import Delivery
from pashq.errors import TimeLimitExceeded
from pashq.processing import Outcome, Prepared, Processor, Result, close_thread_loop

__all__ = ["STUCK_GRACE", "Done", "Executor"]

log = logging.getLogger("pashq.worker")

#: Seconds a sync handler has to return after TimeLimitExceeded was raised in its thread.
STUCK_GRACE = 2.0


@attrs.frozen(slots=True)
class Done:
    """A finished (or given-up) execution.

    :ivar result: what to do with the delivery; ``None`` for a notice that a handler
        thread was given up (its delivery was settled at its time limit already).
    :ivar delivery: the delivery.
    :ivar seconds: how long the handler ran (0 when it did not start).
    :ivar sync: whether it ran on a handler thread.
    """

    result: Result | None
    delivery: Delivery
    seconds: float = 0.0
    sync: bool = True


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc


class _Slot:
    """One handler thread's current job, for the watchdog."""

    __slots__ = ("current", "deadline", "ident", "injected_at", "lock", "stuck", "timed_out")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ident = threading.get_ident()
        self.current: Prepared | None = None
        self.deadline = 0.0
        self.injected_at = 0.0
        self.timed_out = False  # the watchdog settled this job as a failed attempt
        self.stuck = False  # the watchdog gave this thread up

    def begin(self, prepared: Prepared) -> None:
        limit = prepared.time_limit
        if not limit:  # the watchdog never touches a job without a deadline
            self.deadline = 0.0
            self.current = prepared
            return
        with self.lock:
            self.deadline = time.monotonic() + limit if limit else 0.0
            self.injected_at = 0.0
            self.timed_out = False
            self.current = prepared

    def end(self) -> tuple[bool, bool]:
        """Clear the job; return (post the result, keep serving)."""
        if not self.deadline:
            self.current = None
            return True, True
        while True:
            try:
                with self.lock:
                    self.current = None
                    if self.injected_at:
                        # A TimeLimitExceeded raised by the watchdog and not yet delivered
                        # must not land in the next job: cancel it.
                        _set_async_exc(ctypes.c_ulong(self.ident), None)
                        self.injected_at = 0.0
                    return not self.timed_out, not self.stuck
            except TimeLimitExceeded:
                continue  # the watchdog's one exception landed here, after the handler


class Executor:
    """Runs prepared deliveries of one worker run.

    :param processor: validates and processes.
    :param concurrency: most sync handlers running, and most async handlers in flight.
    :param stop: the run's stop event: jobs not started when it is set are handed back.
    :param on_fatal: called when a handler raised ``BaseException`` (``SystemExit`` ...).
    """

    def __init__(
        self,
        processor: Processor,
        concurrency: int,
        stop: threading.Event,
        on_fatal: Callable[[], None],
    ) -> None:
        self.processor = processor
        self.concurrency = concurrency
        self.stop = stop
        self.on_fatal = on_fatal
        self.results: queue_module.SimpleQueue[Done] = queue_module.SimpleQueue()
        self.jobs: queue_module.SimpleQueue[Prepared | None] = queue_module.SimpleQueue()
        self._live = 0  # handler threads not given up (under _slots_lock)
        self._slots: dict[int, _Slot] = {}
        self._slots_lock = threading.Lock()
        self._sync_outstanding = 0  # main thread only: submitted and not yet collected
        self._numbers = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiting_tasks: set[asyncio.Task[None]] = set()

    # -- submitting ------------------------------------------------------------------------------

    def submit(self, prepared: Prepared) -> None:
        """Start (or queue) one prepared delivery; its :class:`Done` arrives in :attr:`results`."""
        if prepared.is_async:
            loop = self._loop or self._start_loop()
            loop.call_soon_threadsafe(self._spawn, prepared)
            return
        self._sync_outstanding += 1
        self._grow()
        self.jobs.put(prepared)

    def _grow(self) -> None:
        if not self._sync_outstanding > self._live < self.concurrency:
            return  # the common case, without the lock
        with self._slots_lock:
            if not self._sync_outstanding > self._live < self.concurrency:
                return
            self._live += 1
        self._start_thread()

    def collected(self, done: Done) -> None:
        """Account one :class:`Done` taken from :attr:`results` (main thread)."""
        if done.result is None:
            self._grow()  # a thread was given up: another one takes its slot
        elif done.sync:
            self._sync_outstanding -= 1

    def take_unstarted(self) -> list[Delivery]:
        """Take back the sync jobs no thread has started; cancel async ones still waiting
        for a slot (they arrive in :attr:`results` as releases)."""
        taken: list[Delivery] = []
        while True:
            try:
                item = self.jobs.get_nowait()
            except queue_module.Empty:
                break
            if item is not None:
                taken.append(item.delivery)
        self._sync_outstanding -= len(taken)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cancel, True)
        return taken

    def interrupt(self) -> None:
        """Stop at once: cancel every async handler (sync threads cannot be stopped)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._cancel, False)

    def close(self) -> None:
        """End the handler threads once idle and close the event loop (waits up to 2 s)."""
        with self._slots_lock:
            live, self._live = self._live, 0
        for _ in range(live):
            self.jobs.put(None)
        loop, thread = self._loop, self._loop_thread
        self._loop = None
        if loop is not None and thread is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=2.0)
            if thread.is_alive():
                log.warning("the worker's event loop is blocked; leaving it behind")

    # -- threads -------------------------------------------------------------------------------

    def _start_thread(self) -> None:
        self._numbers += 1
        thread = threading.Thread(
            target=self._thread_main,
            args=(self.jobs, self.results),
            name=f"pashq-handler-{self._numbers}",
            daemon=True,
        )
        thread.start()

    def _thread_main(
        self,
        jobs: queue_module.SimpleQueue[Prepared | None],
        results: queue_module.SimpleQueue[Done],
    ) -> None:
        # The queues are this run's: a thread that outlives its run never feeds a later one.
        slot = _Slot()
        with self._slots_lock:
            self._slots[slot.ident] = slot
        execute = self.processor.execute
        stop = self.stop
        try:
            while True:
                prepared = jobs.get()
                if prepared is None:
                    return
                delivery = prepared.delivery
                if stop.is_set():
                    # Pulled but not started: hand it back through the main thread.
                    results.put(Done(Result(delivery, Outcome.RELEASE), delivery))
                    continue
                started = time.monotonic()
                slot.begin(prepared)
                try:
                    result = execute(prepared)
                except TimeLimitExceeded:  # landed outside the handler, after its end
                    result = self.processor.failure(
                        prepared, TimeLimitExceeded(prepared.time_limit)
                    )
                except BaseException as exc:  # SystemExit & co. from a handler: stop the worker
                    post, serve = slot.end()
                    log.error("handler raised %s; stopping the worker", type(exc).__name__)
                    if post:
                        results.put(Done(Result(delivery, Outcome.RELEASE), delivery))
                    self.on_fatal()
                    if not serve:
                        return
                    continue
                post, serve = slot.end()
                if post:  # else the watchdog settled it at its time limit
                    results.put(Done(result, delivery, time.monotonic() - started))
                if not serve:
                    return  # given up by the watchdog: a new thread took its place
        finally:
            with self._slots_lock:
                if self._slots.pop(slot.ident, None) is not None and not slot.stuck:
                    self._live -= 1
            close_thread_loop()

    def check_limits(self) -> None:
        """The watchdog (supervisor thread): at a sync handler's time limit, raise
        TimeLimitExceeded in its thread and settle the delivery as a failed attempt; a
        thread still not back :data:`STUCK_GRACE` seconds later is replaced."""
        now = time.monotonic()
        with self._slots_lock:
            slots = list(self._slots.values())
        for slot in slots:
            with slot.lock:
                prepared = slot.current
                if prepared is None or not slot.deadline or now < slot.deadline or slot.stuck:
                    continue
                delivery = prepared.delivery
                if not slot.injected_at:
                    slot.injected_at = now
                    slot.timed_out = True
                    _set_async_exc(ctypes.c_ulong(slot.ident), ctypes.py_object(TimeLimitExceeded))
                    limit = prepared.time_limit
                    log.warning(
                        "message %s on %r ran past its time limit of %g s; interrupting it",
                        delivery.id,
                        delivery.queue,
                        limit,
                    )
                    failed = self.processor.failure(prepared, TimeLimitExceeded(limit))
                    self.results.put(Done(failed, delivery, limit or 0.0))
                    continue
                if now - slot.injected_at < STUCK_GRACE:
                    continue
                slot.stuck = True
            log.error(
                "the handler of message %s on %r did not stop at its time limit (blocked in "
                "C code, or it caught the exception); a new handler thread takes its slot",
                delivery.id,
                delivery.queue,
            )
            with self._slots_lock:
                if self._slots.pop(slot.ident, None) is not None:
                    self._live -= 1
            self.results.put(Done(None, delivery, sync=False))

    # -- the event loop ------------------------------------------------------------------------

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._loop_main, args=(loop,), name="pashq-asyncio", daemon=True
        )
        self._loop, self._loop_thread = loop, thread
        thread.start()
        return loop

    def _loop_main(self, loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        except Exception:
            log.exception("closing the worker's event loop failed")
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def _spawn(self, prepared: Prepared) -> None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        task = asyncio.get_running_loop().create_task(self._task(prepared, self.results))
        self._tasks.add(task)
        self._waiting_tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _cancel(self, waiting_only: bool) -> None:
        for task in list(self._waiting_tasks if waiting_only else self._tasks):
            task.cancel()

    async def _task(self, prepared: Prepared, results: queue_module.SimpleQueue[Done]) -> None:
        delivery = prepared.delivery
        semaphore = self._semaphore
        assert semaphore is not None
        task = asyncio.current_task()
        try:
            await semaphore.acquire()
        except asyncio.CancelledError:
            results.put(Done(Result(delivery, Outcome.RELEASE), delivery, sync=False))
            return
        finally:
            self._waiting_tasks.discard(task)  # type: ignore[arg-type,unused-ignore]
        try:
            if self.stop.is_set():
                results.put(Done(Result(delivery, Outcome.RELEASE), delivery, sync=False))
                return
            started = time.monotonic()
            try:
                result = await self.processor.execute_async(prepared)
            except asyncio.CancelledError:
                return  # stopped at once: not acked, its lease brings it back
            except BaseException as exc:  # SystemExit & co. from a handler: stop the worker
                log.error("handler raised %s; stopping the worker", type(exc).__name__)
                results.put(Done(Result(delivery, Outcome.RELEASE), delivery, sync=False))
                self.on_fatal()
                return
            results.put(Done(result, delivery, time.monotonic() - started, sync=False))
        finally:
            semaphore.release()

"""``pashq work --processes N``: N worker processes under one supervisor.

The supervisor starts each child with the ``spawn`` start method: a fresh interpreter that
imports the app and opens its own connections, so no socket, pool, lock or thread of the
supervisor is ever shared with a child (the supervisor itself never connects; forking
after a rich status-line thread started would copy a process mid-way). A child runs one
:class:`~pashq.Worker` and reports its counters over a pipe about twice a second; the
supervisor sums them for the status line and the ``--json`` summary.

- A child that dies (a crash, SIGKILL, the OOM killer) is started again after a back-off
  that doubles from 0.5 s to 30 s (reset once a child lived 30 s); what it held comes
  back to the queue by the driver's lease, as for any dead worker.
- ``max_messages_per_child`` / ``max_memory_per_child`` recycle a child: it stops pulling,
  finishes what it runs, settles it, hands back what it pulled but had not started, exits,
  and a new child takes its place at once. Recycling never abandons or repeats a message.
- SIGTERM/SIGINT to the supervisor are forwarded as SIGTERM: every child stops gracefully
  (bounded by ``shutdown_timeout``); a second signal is forwarded too, and the children stop
  at once. Children run in their own process group, so a terminal's Ctrl-C reaches them
  only through the supervisor (once, not twice). A child whose supervisor is gone stops by
  itself.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import attrs

from pashq.errors import PashqError
from pashq.worker.conductor import Worker
from pashq.worker.prefetch import Prefetch
from pashq.worker.signals import give_back_signals, take_signals
from pashq.worker.stats import WorkerStats

__all__ = ["ChildSpec", "MetricsSpec", "ProcessSupervisor"]

log = logging.getLogger("pashq.worker")

_REPORT_SECONDS = 0.5  # how often the supervisor calls on_progress
_BACKOFF_FIRST = 0.5  # seconds before the first restart of a crashed child
_BACKOFF_MAX = 30.0
_HEALTHY_SECONDS = 30.0  # a child that lived this long resets its slot's back-off
_KILL_GRACE = 10.0  # seconds past shutdown_timeout before a stuck child gets SIGKILL
_FORWARD_GAP = 0.2  # seconds between a first and a second forwarded SIGTERM
_COUNTERS = ("acked", "retried", "dead_lettered", "released", "timed_out", "errors")

#: Why a child ended, as it reports it.
RECYCLED_MESSAGES = "max_messages_per_child"
RECYCLED_MEMORY = "max_memory_per_child"
DRAINED = "empty"
STOPPED = "stopped"


@attrs.frozen
class ChildSpec:
    """What each child runs; picklable, because children are spawned.

    :ivar queues: queue names.
    :ivar connection: the configured connection name.
    :ivar config: the config file (None: the usual search, in the supervisor's cwd).
    :ivar imports: extra modules that define message classes.
    :ivar worker_options: keyword arguments of :class:`~pashq.Worker` (concurrency, ...).
    :ivar until_empty: each child stops once the queues are drained (not restarted).
    :ivar max_messages_per_child: recycle a child after it handled this many messages.
    :ivar max_memory_per_child: recycle a child whose resident memory passed this many bytes.
    :ivar setup: called first in each child (e.g. the command line's logging setup).
    :ivar message_log: each child logs one JSON record per message (``--log-format json``).
    :ivar metrics: each child serves Prometheus metrics (``--metrics-port``).
    """

    queues: tuple[str, ...]
    connection: str = "default"
    config: str | None = None
    imports: tuple[str, ...] = ()
    worker_options: dict[str, Any] = attrs.field(factory=dict)
    until_empty: bool = False
    max_messages_per_child: int | None = None
    max_memory_per_child: int | None = None
    setup: Callable[[], None] | None = None
    message_log: bool = False
    metrics: MetricsSpec | None = None


@attrs.frozen
class MetricsSpec:
    """Prometheus metrics of the children: child ``i`` serves on ``port + i``.

    :ivar port: the first child's port.
    :ivar host: the address every child listens on.
    :ivar interval: seconds between two samples of the queue depths.
    """

    port: int
    host: str = "127.0.0.1"
    interval: float = 15.0


def resident_bytes() -> int:
    """This process's resident memory in bytes (``/proc/self/statm``, else peak RSS)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


class _CautiousStart(Prefetch):
    """Before anything is measured, hold two messages per slot, not a whole batch.

    A plain worker with ``concurrency=1`` starts with a whole batch; in a child that would
    leave the other children idle behind one child's first batch of slow handlers.
    """

    def target(self) -> int:
        """Two per slot until a handler finished; then the usual rule."""
        if self.fixed is None and self.average is None:
            return min(self.ceiling, 2 * self.concurrency)
        return super().target()


class _ChildWorker(Worker):
    """The worker of one child: :class:`_CautiousStart` prefetch."""

    def _reset_run_state(self) -> None:
        super()._reset_run_state()
        self._prefetch = _CautiousStart(self.concurrency, self._batch, self.prefetch)


def _child_main(
    spec: ChildSpec, index: int, parent_pid: int, pipe: multiprocessing.connection.Connection
) -> None:
    """The body of one child: configure, run one Worker, report over ``pipe``."""
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # a terminal's SIGINT goes to the supervisor only; it forwards it once
    if spec.setup is not None:
        spec.setup()
    from pashq.facade import close, configure, import_messages, queue, settings

    reason = STOPPED
    try:
        configure(spec.config)
        conn = queue(spec.connection)
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # the app lives in the cwd, as for `pashq work`
        import_messages(list(settings().imports) + list(spec.imports))
        if spec.message_log:
            from pashq.logs import MessageLog

            conn.plugin_manager.register(MessageLog(), name="pashq.logs.messages")
        if spec.metrics is not None:
            from pashq.worker.prometheus import serve_metrics

            served = serve_metrics(
                conn,
                list(spec.queues),
                port=spec.metrics.port + index,
                host=spec.metrics.host,
                interval=spec.metrics.interval,
            )
            log.info("child %d serving metrics on %s", index, served.url)
        worker: _ChildWorker | None = None
        memory_limit = spec.max_memory_per_child

        def report(stats: WorkerStats) -> None:
            nonlocal reason
            assert worker is not None
            try:
                pipe.send(("stats", stats.as_dict()))
            except OSError:
                worker.stop()  # the supervisor is gone
                return
            if os.getppid() != parent_pid:
                worker.stop()  # orphaned: the supervisor died without stopping us
            elif memory_limit is not None and reason == STOPPED and stats.handled:
                # Only after some work: a child over the limit from the start would else be
                # replaced for ever without handling a message.
                used = resident_bytes()
                if used > memory_limit:
                    reason = RECYCLED_MEMORY
                    log.info(
                        "child %d (pid %d) uses %d MB, over --max-memory-per-child; recycling",
                        index,
                        os.getpid(),
                        used // 2**20,
                    )
                    worker.stop()

        worker = _ChildWorker(
            list(spec.queues),
            connection=conn,
            max_messages=spec.max_messages_per_child,
            on_progress=report,
            **spec.worker_options,
        )
        stats = worker.run(until_empty=spec.until_empty)
        limit = spec.max_messages_per_child
        if reason == STOPPED and limit is not None and stats.handled >= limit:
            reason = RECYCLED_MESSAGES
        elif reason == STOPPED and spec.until_empty and not stats.interrupted:
            # A signal to this child also ends an until_empty run; then the supervisor is
            # stopping anyway and does not ask why.
            reason = DRAINED
        pipe.send(("final", stats.as_dict(), reason))
        close()
    except PashqError as exc:
        pipe.send(("fatal", str(exc)))
        raise SystemExit(1) from None
    finally:
        pipe.close()
    if stats.interrupted:
        raise SystemExit(1)


@attrs.define
class _Slot:
    """One of the N places a child runs in: the current child and what its forerunners did."""

    index: int
    process: Any = None  # multiprocessing.Process (spawn context)
    pipe: multiprocessing.connection.Connection | None = None
    started: float = 0.0
    latest: dict[str, Any] = attrs.field(factory=dict)  # the live child's last counters
    consuming: bool | None = None  # what the last report (of any child here) said, if any
    totals: dict[str, int] = attrs.field(factory=lambda: dict.fromkeys(_COUNTERS, 0))
    ended: tuple[str, dict[str, Any]] | None = None  # the child's final report
    crashes: int = 0
    restart_at: float | None = None
    finished: bool = False  # until_empty: drained; not started again
    killed: bool = False


class ProcessSupervisor:
    """Runs ``processes`` children of :class:`ChildSpec` until stopped; sums their stats.

    :param spec: what every child runs.
    :param processes: how many children at once.
    :param shutdown_timeout: seconds a graceful stop may take (the children's own timeout).
    :param install_signal_handlers: handle SIGTERM/SIGINT (main thread only).
    :param on_progress: called with the summed :class:`WorkerStats` about twice a second.
    """

    def __init__(
        self,
        spec: ChildSpec,
        processes: int,
        *,
        shutdown_timeout: float = 30.0,
        install_signal_handlers: bool = True,
        on_progress: Callable[[WorkerStats], None] | None = None,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.spec = spec
        self.processes = processes
        self.shutdown_timeout = shutdown_timeout
        self.install_signal_handlers = install_signal_handlers
        self.on_progress = on_progress
        self.restarts = 0  # children started again after dying
        self.recycled = 0  # children replaced after max_messages/max_memory_per_child
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i) for i in range(processes)]
        self._signals = 0
        self._stop_sent = 0  # how many SIGTERMs went to the children
        self._stop_since = 0.0
        self._last_forward = -_FORWARD_GAP
        self._fatal: str | None = None
        self._started_at = time.monotonic()

    # -- public control --------------------------------------------------------------------

    def stop(self, *, immediate: bool = False) -> None:
        """Stop every child gracefully (``immediate``: at once); safe from a signal handler."""
        self._signals = max(self._signals + 1, 2 if immediate else 1)

    @property
    def pids(self) -> list[int]:
        """The process ids of the children running now."""
        return [
            s.process.pid for s in self._slots if s.process is not None and s.process.is_alive()
        ]

    def run(self) -> WorkerStats:
        """Supervise until stopped (or, with ``until_empty``, until every child drained).

        :returns: the counters summed over every child that ran.
        :raises PashqError: a child could not start (bad config, missing queue table...).
        """
        previous: dict[signal.Signals, Any] = {}
        if self.install_signal_handlers:
            try:
                previous = take_signals(self._on_signal)
            except ValueError:  # not the main thread: the caller uses stop()
                previous = {}
        last_report = 0.0
        try:
            for slot in self._slots:
                self._start(slot)
            while not all(
                s.process is None and (s.finished or self._stopping) for s in self._slots
            ):
                self._forward_stop()
                self._wait_events(0.25)
                self._reap()
                self._restart_due()
                now = time.monotonic()
                if now - last_report >= _REPORT_SECONDS:
                    last_report = now
                    self._report()
        finally:
            self._kill_all()
            give_back_signals(previous)
            self._report()
        if self._fatal is not None:
            raise PashqError(self._fatal)
        return self.stats()

    # -- stats -------------------------------------------------------------------------------

    def stats(self) -> WorkerStats:
        """The counters of every child so far, summed."""
        total = WorkerStats(started_at=self._started_at)
        for slot in self._slots:
            for name in _COUNTERS:
                value = slot.totals[name] + int(slot.latest.get(name, 0))
                setattr(total, name, getattr(total, name) + value)
            if slot.latest.get("last_error"):
                total.last_error = slot.latest["last_error"]
            if slot.latest.get("interrupted") or slot.killed:
                total.interrupted = True
        # A child still starting has not said yet: it does not make the others "not consuming".
        said = [slot.consuming for slot in self._slots if slot.consuming is not None]
        total.consuming = bool(said) and all(said)
        if self._signals > 1:
            total.interrupted = True
        return total

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.stats())

    # -- children ----------------------------------------------------------------------------

    @property
    def _stopping(self) -> bool:
        return self._signals > 0 or self._fatal is not None

    def _start(self, slot: _Slot) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child_main,
            args=(self.spec, slot.index, os.getpid(), writer),
            name=f"pashq-work-{slot.index}",
        )
        process.start()
        writer.close()  # the child holds the only write end: EOF when it exits
        slot.process, slot.pipe = process, reader
        slot.started, slot.latest, slot.ended, slot.restart_at = time.monotonic(), {}, None, None
        log.info("child %d started (pid %d)", slot.index, process.pid)

    def _wait_events(self, timeout: float) -> None:
        """Wait for a report, a child's exit or the timeout; read every report that came."""
        waitables: list[Any] = []
        for slot in self._slots:
            if slot.process is not None:
                waitables.append(slot.process.sentinel)
                if slot.pipe is not None:
                    waitables.append(slot.pipe)
        if waitables:
            multiprocessing.connection.wait(waitables, timeout)
        else:
            time.sleep(timeout)
        for slot in self._slots:
            self._read(slot)

    def _read(self, slot: _Slot) -> None:
        pipe = slot.pipe
        if pipe is None:
            return
        try:
            while pipe.poll():
                message = pipe.recv()
                kind = message[0]
                if kind == "stats":
                    slot.latest = message[1]
                    slot.consuming = bool(message[1].get("consuming"))
                elif kind == "final":
                    slot.latest = message[1]
                    slot.consuming = bool(message[1].get("consuming"))
                    slot.ended = (message[2], message[1])
                elif kind == "fatal" and self._fatal is None:
                    self._fatal = message[1]
                    log.error("child %d cannot run: %s", slot.index, message[1])
        except (EOFError, OSError):
            pipe.close()
            slot.pipe = None

    def _reap(self) -> None:
        """Account for children that exited and plan what replaces them."""
        for slot in self._slots:
            process = slot.process
            if process is None or process.is_alive():
                continue
            process.join()
            self._read(slot)
            if slot.pipe is not None:
                slot.pipe.close()
                slot.pipe = None
            for name in _COUNTERS:
                slot.totals[name] += int(slot.latest.get(name, 0))
            if slot.latest.get("interrupted"):
                slot.killed = True
            slot.latest = {"last_error": slot.latest.get("last_error")}
            slot.process = None
            code = process.exitcode
            lived = time.monotonic() - slot.started
            if self._stopping:
                continue
            reason = slot.ended[0] if slot.ended is not None else None
            if code == 0 and reason == DRAINED:
                slot.finished = True
                log.info("child %d (pid %d) drained the queues", slot.index, process.pid)
            elif code == 0 and reason in (RECYCLED_MESSAGES, RECYCLED_MEMORY):
                self.recycled += 1
                log.info("child %d (pid %d) recycled (%s)", slot.index, process.pid, reason)
                slot.restart_at = time.monotonic()
            elif code == 0:
                slot.restart_at = time.monotonic()  # stopped on its own (a signal to it)
                self.restarts += 1
            else:
                if lived >= _HEALTHY_SECONDS:
                    slot.crashes = 0
                delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2**slot.crashes)
                slot.crashes += 1
                self.restarts += 1
                how = (
                    f"signal {signal.Signals(-code).name}"
                    if code is not None and code < 0
                    else f"exit code {code}"
                )
                log.warning(
                    "child %d (pid %d) died (%s); starting another in %gs",
                    slot.index,
                    process.pid,
                    how,
                    delay,
                )
                slot.restart_at = time.monotonic() + delay

    def _restart_due(self) -> None:
        if self._stopping:
            return
        now = time.monotonic()
        for slot in self._slots:
            if slot.process is None and slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    # -- stopping ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info(
                "received %s: stopping %d child(ren) gracefully (up to %gs); signal again "
                "to stop them at once",
                signal.Signals(signum).name,
                len(self.pids),
                self.shutdown_timeout,
            )
        else:
            log.warning(
                "received %s again: stopping the children at once", signal.Signals(signum).name
            )

    def _forward_stop(self) -> None:
        """Send each child as many SIGTERMs as the supervisor got signals (at most two)."""
        wanted = min(self._signals, 2) if self._signals else (1 if self._fatal else 0)
        now = time.monotonic()
        # One SIGTERM per round, rounds apart: two signals sent back to back could reach a
        # child as one (signals of one kind do not queue), and it would not stop at once.
        if self._stop_sent < wanted and now - self._last_forward >= _FORWARD_GAP:
            self._stop_sent += 1
            self._last_forward = now
            self._stop_since = self._stop_since or now
            for slot in self._slots:
                if slot.process is not None and slot.process.pid is not None:
                    # It may have exited meanwhile; _reap accounts for it.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(slot.process.pid, signal.SIGTERM)
        if self._stop_since and time.monotonic() - self._stop_since > (
            self.shutdown_timeout + _KILL_GRACE
        ):
            self._kill_all()

    def _kill_all(self) -> None:
        """SIGKILL every child still running (a stuck stop, or the supervisor failing)."""
        for slot in self._slots:
            process = slot.process
            if process is not None and process.is_alive():
                log.warning("child %d (pid %d) did not stop; killing it", slot.index, process.pid)
                slot.killed = True
                process.kill()
                process.join(5.0)
        self._reap()

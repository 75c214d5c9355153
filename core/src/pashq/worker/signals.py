"""Stop requests and SIGTERM/SIGINT: a graceful stop, then a stop at once.

The first signal stops pulling and lets running handlers finish (bounded by
``shutdown_timeout``, after which a timer sends the stop at once); a second signal raises
:class:`Killed` in the worker's thread. Signals arriving while a stop at once is cleaned up
are ignored, so the acks being flushed are not abandoned. :class:`StartupSignals` covers
``pashq work`` before its worker runs.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["Killed", "StartupSignals", "StopControl", "give_back_signals", "take_signals"]

log = logging.getLogger("pashq.worker")


def take_signals(handler: Any) -> dict[signal.Signals, Any]:
    """Handle SIGTERM and SIGINT with ``handler`` (main thread only); return the previous
    handlers."""
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def give_back_signals(previous: dict[signal.Signals, Any]) -> None:
    """Put back the handlers :func:`take_signals` returned."""
    for sig, handler in previous.items():
        signal.signal(sig, handler)


class Killed(BaseException):
    """Raised in the worker's thread by a second signal: stop now, settle nothing unfinished."""


class StopControl:
    """The stop state of one worker: the events, the signal handlers and the shutdown timer."""

    def __init__(self, shutdown_timeout: float) -> None:
        self.shutdown_timeout = shutdown_timeout
        self.stop = threading.Event()
        self.kill = False
        self.cleaning_up = False  # a stop is being cleaned up: further signals are ignored
        self.signals = 0
        self.timer: threading.Timer | None = None
        self.main_thread: int | None = None
        self._previous: dict[signal.Signals, Any] | None = None

    def reset(self) -> None:
        """Forget the stop of an earlier run."""
        self.stop.clear()
        self.kill = False
        self.cleaning_up = False
        self.signals = 0

    def request(self, immediate: bool = False) -> None:
        """Stop gracefully, or (``immediate``) at once (thread-safe)."""
        if immediate:
            self.kill = True
        self.stop.set()

    # -- signals -----------------------------------------------------------------------------

    def install(self, enabled: bool) -> None:
        """Handle SIGTERM/SIGINT (only in the main thread and when ``enabled``)."""
        self._previous = None
        if not enabled or threading.current_thread() is not threading.main_thread():
            return
        self.main_thread = threading.get_ident()
        self._previous = take_signals(self._on_signal)

    def restore(self) -> None:
        """Put back the signal handlers found at :meth:`install`; cancel the shutdown timer."""
        if self.timer is not None:
            self.timer.cancel()  # a shutdown timer must not fire into a later run
            self.timer = None
        if self._previous:
            give_back_signals(self._previous)
        self._previous = None
        self.main_thread = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.cleaning_up:
            # Already stopping at once: raising here would abandon the acks being flushed.
            log.warning(
                "received %s while stopping; finishing the stop", signal.Signals(signum).name
            )
            return
        self.signals += 1
        if self.signals == 1 and not self.kill:
            log.info(
                "received %s: finishing in-flight work (up to %gs); signal again to stop now",
                signal.Signals(signum).name,
                self.shutdown_timeout,
            )
            self.stop.set()
            self.timer = threading.Timer(self.shutdown_timeout, self._interrupt_main)
            self.timer.daemon = True
            self.timer.start()
            return
        self.kill = True
        self.stop.set()
        raise Killed()

    def _interrupt_main(self) -> None:
        if self.main_thread is not None and not self.kill and not self.cleaning_up:
            log.warning("shutdown timeout of %gs passed; stopping at once", self.shutdown_timeout)
            # A real signal (not interrupt_main) also interrupts a blocking sleep or read.
            os.kill(os.getpid(), signal.SIGINT)


class StartupSignals:
    """SIGTERM/SIGINT while ``pashq work`` is still starting (connecting, serving metrics).

    The first signal is remembered and handed to the runner as a graceful stop once it
    exists (its run then ends as soon as it starts, with exit status 0); a second one
    before that ends the process as the signal would have. Once the runner runs, it
    installs its own handlers, and puts these back when it returns.
    """

    def __init__(self) -> None:
        self.signals = 0
        self._runner: Any = None
        self._previous: dict[signal.Signals, Any] = {}

    def install(self) -> None:
        """Take SIGTERM and SIGINT (only possible in the main thread; else do nothing)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = take_signals(self._on_signal)

    def hand_to(self, runner: Any) -> None:
        """From now on a signal stops ``runner`` (anything with ``stop(immediate=)``)."""
        self._runner = runner
        if self.signals:
            runner.stop(immediate=self.signals > 1)

    def restore(self) -> None:
        """Put back the handlers found at :meth:`install`."""
        give_back_signals(self._previous)
        self._previous = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self._runner is not None:
            self._runner.stop(immediate=self.signals > 1)
            return
        name = signal.Signals(signum).name
        if self.signals == 1:
            log.warning("%s while starting: the worker stops as soon as it has started", name)
            return
        self.restore()  # a second one: what the signal does without pashq
        os.kill(os.getpid(), signum)

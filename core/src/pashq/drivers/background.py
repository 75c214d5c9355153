"""``async``: runs messages in the background of the dispatching process.

``dispatch`` stores the message in memory and returns at once; a worker thread per queue,
started on the first dispatch, processes it with the full worker contract (retries with
backoff, dead letters kept in memory and visible through ``pashq.queue(...).failed()``).
Errors are logged, never swallowed. Messages not yet processed are lost when the process
exits; :meth:`AsyncDriver.pashq_close` (``pashq.close()``) first waits for the queues to
drain, up to ``drain_timeout`` seconds.

Options: ``lease`` (as for ``memory``), ``concurrency`` (handler threads per queue, default
1), ``drain_timeout`` (seconds, default 10).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pashq.config import parse_options
from pashq.connection import Connection
from pashq.delivery import OutgoingMessage
from pashq.drivers.memory import MemoryDriver
from pashq.hookspecs import hookimpl

__all__ = ["AsyncDriver"]

log = logging.getLogger(__name__)


@attrs.frozen
class AsyncOptions:
    """Options of the async driver."""

    lease: float = 30.0
    concurrency: int = 1
    drain_timeout: float = 10.0


class AsyncDriver(MemoryDriver):
    """The memory driver plus a background worker thread per queue."""

    name = "async"
    # consume=False: messages live in the dispatching process, so `pashq work` elsewhere
    # has nothing to read; the driver's own background workers bypass that check.
    capabilities = attrs.evolve(MemoryDriver.capabilities, consume=False)

    def __init__(self) -> None:
        super().__init__()
        self._workers: dict[str, tuple[Any, threading.Thread]] = {}
        self._start_lock = threading.Lock()

    @hookimpl
    def pashq_connect(self, connection: Connection) -> None:
        """Validate the options and remember the connection for the workers."""
        self.options = parse_options(AsyncOptions, connection.options, connection.where)
        self.lease = self.options.lease
        self.connection = connection

    def _ensure_worker(self, queue: str) -> None:
        if queue in self._workers:
            return
        from pashq.worker import Worker

        with self._start_lock:
            if queue in self._workers:
                return
            worker = Worker(
                queue,
                connection=self.connection,
                concurrency=self.options.concurrency,
                poll_timeout=0.5,
                install_signal_handlers=False,
            )
            worker._background = True
            thread = threading.Thread(target=worker.run, name=f"pashq-async-{queue}", daemon=True)
            self._workers[queue] = (worker, thread)
            thread.start()

    @hookimpl
    def pashq_push(
        self, queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        """Store the messages and make sure the queue's background worker runs."""
        ids = super().pashq_push(queue=queue, messages=messages, options=options)
        self._ensure_worker(queue)
        return ids

    def drain(self, timeout: float) -> bool:
        """Wait until no queue has ready, delayed or leased messages; return whether it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._cond:
                busy = any(q.ready or q.delayed or q.leased for q in self._queues.values())
                if not busy:
                    return True
                self._cond.wait(0.05)
        return False

    @hookimpl
    def pashq_close(self) -> None:
        """Drain (up to ``drain_timeout``), then stop the background workers."""
        if self._workers and not self.drain(self.options.drain_timeout):
            log.warning("async driver closed with messages still pending; they are lost")
        for worker, _ in self._workers.values():
            worker.stop()
        super().pashq_close()
        for _, thread in self._workers.values():
            thread.join(timeout=5)
        self._workers.clear()

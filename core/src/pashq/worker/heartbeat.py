"""The supervisor thread of a run: lease heartbeat and the time-limit watchdog.

It runs until :meth:`pashq.Worker.run` returns: after a stop signal it keeps extending the
leases of work still in flight, so a graceful shutdown does not cause redeliveries. An
extension and a settlement never overlap (both hold the settlement lock), so an extension
never lands after a delivery was settled.
"""

from __future__ import annotations

import threading

from pashq.worker.execution import Executor
from pashq.worker.settlement import Settlement

__all__ = ["HEARTBEAT_SECONDS", "Supervisor"]

#: How often the supervisor looks at leases and time limits.
HEARTBEAT_SECONDS = 0.2


class Supervisor:
    """Extends due leases (when the driver can) and enforces sync handlers' time limits.

    :param settlement: the run's held deliveries.
    :param executor: the run's handler threads.
    :param extend: whether the driver extends leases (``extend_lease`` capability).
    """

    def __init__(self, settlement: Settlement, executor: Executor, extend: bool) -> None:
        self.settlement = settlement
        self.executor = executor
        self.extend = extend
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._main, name="pashq-heartbeat", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """End the thread (waits up to 2 s for an extension in progress)."""
        self.finished.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _main(self) -> None:
        finished, settlement = self.finished, self.settlement
        while not finished.wait(HEARTBEAT_SECONDS):
            self.executor.check_limits()
            if self.extend:
                with settlement.lock:  # nothing is settled between the snapshot and extension
                    if finished.is_set():
                        return
                    settlement.extend_due()

"""The pashq worker: :class:`Worker` (the conductor) and :class:`WorkerStats`.

Its parts, one module each: :mod:`.prefetch`, :mod:`.execution`, :mod:`.settlement`,
:mod:`.heartbeat`, :mod:`.signals`; :mod:`.conductor` holds the :class:`Worker` itself.
"""

from __future__ import annotations

from pashq.worker.conductor import Worker
from pashq.worker.stats import WorkerStats

__all__ = ["Worker", "WorkerStats"]

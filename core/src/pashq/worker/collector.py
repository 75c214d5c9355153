"""The garbage collector during a worker run: what existed before the run is left out.

A full collection traverses every object the collector tracks; in a worker process that is
the imported modules and the application's state (often a few hundred thousand objects,
20 to 30 ms a collection on the development machine), while what a run creates is mostly
short-lived. :func:`frozen_heap` moves what exists when the run starts into the
collector's permanent generation (:func:`gc.freeze`) and back when the last concurrent run
ends (:func:`gc.unfreeze`). Frozen objects are still freed by reference counting; only a
reference cycle among them waits for the end of the run to be collected.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["frozen_heap"]

_lock = threading.Lock()
_runs = 0  # runs inside frozen_heap() that froze or found the heap frozen by one of them
_froze = False  # whether this module froze the heap (never undo someone else's freeze)


@contextmanager
def frozen_heap(enabled: bool = True) -> Iterator[None]:
    """Freeze the collector's view of the heap for the ``with`` block (a worker run).

    Does nothing when ``enabled`` is false, when the collector is disabled, or when the
    process froze objects itself (``gc.get_freeze_count()`` is not 0: it manages them).
    """
    global _runs, _froze
    if not enabled:
        yield
        return
    with _lock:
        if _runs == 0 and gc.isenabled() and gc.get_freeze_count() == 0:
            gc.freeze()
            _froze = True
        _runs += 1
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0 and _froze:
                _froze = False
                gc.unfreeze()

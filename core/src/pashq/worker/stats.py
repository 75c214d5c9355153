"""``WorkerStats``: the counters of one :meth:`pashq.Worker.run`."""

from __future__ import annotations

import time
from typing import Any

import attrs

__all__ = ["WorkerStats"]


@attrs.define
class WorkerStats:
    """Counters of one :meth:`Worker.run`.

    :ivar acked: messages processed successfully.
    :ivar retried: failures released for another attempt.
    :ivar dead_lettered: messages moved to the dead letters.
    :ivar released: messages pulled but handed back unprocessed at shutdown.
    :ivar deferred: messages not started because a rate limit or concurrency cap was full,
        sent back with a delay (no attempt counted).
    :ivar timed_out: attempts that ran past their time limit (counted in retried/dead_lettered).
    :ivar errors: backend errors (failed pulls or settlements).
    :ivar last_error: the last backend error, if any.
    :ivar consuming: whether the last pull reached the backend.
    :ivar interrupted: whether the worker stopped at once (second signal, shutdown timeout,
        ``stop(immediate=True)``).
    :ivar started_at: ``time.monotonic()`` at start.
    """

    acked: int = 0
    retried: int = 0
    dead_lettered: int = 0
    released: int = 0
    deferred: int = 0
    timed_out: int = 0
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

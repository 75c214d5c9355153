"""How many messages a worker holds: adaptive from how fast its slots finish, or fixed.

The rule (documented in docs/worker-and-cli.md, "Prefetch"): the worker holds what its
``concurrency`` slots are running plus what they will finish in the next :data:`HORIZON`
seconds at the measured pace (a moving average of handler durations), between
``concurrency`` and ``concurrency + 2 x batch_size`` (``batch_size`` for one slot). Short
handlers thus get whole batches (one claim per ``batch_size`` messages), long ones about
one message per slot, leaving the rest of the queue to other workers. It refills when the
slots would run dry: when at most half of the target is held, or a slot is idle with
nothing waiting.
"""

from __future__ import annotations

import math

__all__ = ["HORIZON", "Prefetch"]

#: Seconds of work (at the measured pace) held beyond the running messages.
HORIZON = 0.25
_WEIGHT = 0.2  # of a new duration in the moving average


class Prefetch:
    """The prefetch policy of one worker run.

    :param concurrency: handler slots.
    :param batch_size: most messages one pull may ask for.
    :param fixed: hold at most this many (``Worker(prefetch=N)``); ``None`` adapts.
    """

    def __init__(self, concurrency: int, batch_size: int, fixed: int | None = None) -> None:
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.fixed = fixed
        self.average: float | None = None  # seconds per handler, moving average
        # One slot works through its batch itself; slots fed from a queue get two batches
        # beyond the running ones, so each refill can be a whole batch.
        self.ceiling = batch_size if concurrency == 1 else concurrency + 2 * batch_size

    def observe(self, seconds: float) -> None:
        """Account one finished handler that ran ``seconds``."""
        average = self.average
        self.average = seconds if average is None else average + _WEIGHT * (seconds - average)

    def target(self) -> int:
        """How many messages to hold (running and waiting) now."""
        if self.fixed is not None:
            return self.fixed
        average = self.average
        if average is None:
            # Nothing measured yet: one batch for a single slot, two messages per slot else.
            return (
                self.batch_size
                if self.concurrency == 1
                else min(self.ceiling, 2 * self.concurrency)
            )
        if average <= 0:
            return self.ceiling
        ahead = math.floor(self.concurrency * HORIZON / average)
        return max(self.concurrency, min(self.ceiling, self.concurrency + ahead))

    def want(self, held: int, idle: bool) -> int:
        """How many to pull now (0: do not pull), given ``held`` and whether a slot is idle
        with nothing waiting for it."""
        target = self.target()
        missing = target - held
        if missing <= 0:
            return 0
        if not idle and held > target // 2:
            return 0  # enough to keep the slots busy: pull a bigger batch later
        return min(self.batch_size, missing)

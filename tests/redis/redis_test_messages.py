"""Message classes for the Redis reliability tests (also imported by worker subprocesses).

``RedisTick`` appends its number to ``$PASHQ_TEST_OUT/<pid>.txt`` (one file per worker
process), after sleeping ``$PASHQ_TEST_SLEEP`` seconds, so a test can count what every
process did, including one it killed.
"""

from __future__ import annotations

import os
import time

import attrs

from pashq import Message


@attrs.define
class RedisTick(Message, type_name="pashq_redis_tests.tick"):
    """Records ``n`` in this process's output file."""

    n: int

    def process_message(self) -> None:
        """Sleep a little (if asked), then record the number."""
        pause = float(os.environ.get("PASHQ_TEST_SLEEP", "0") or 0)
        if pause:
            time.sleep(pause)
        out = os.environ["PASHQ_TEST_OUT"]
        with open(os.path.join(out, f"{os.getpid()}.txt"), "a", encoding="utf-8") as f:
            f.write(f"{self.n}\n")


#: What :class:`RedisSlow` recorded, per key, in this process.
slow_runs: dict[str, int] = {}


@attrs.define
class RedisSlow(Message, type_name="pashq_redis_tests.slow"):
    """Sleeps ``seconds`` (longer than the lease), then counts a run under ``key``."""

    key: str
    seconds: float

    def process_message(self) -> None:
        """Sleep, then count."""
        time.sleep(self.seconds)
        slow_runs[self.key] = slow_runs.get(self.key, 0) + 1

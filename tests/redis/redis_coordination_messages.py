"""Messages of the Redis coordination tests (imported by the test and its processes).

Handlers append ``start|end <time.time()> <pid> <message id>`` lines to
``$PASHQ_TEST_RECORD`` (one ``O_APPEND`` write each, so processes never mix lines).
"""

from __future__ import annotations

import os
import time

import attrs

import pashq


def record(event: str) -> None:
    """Append ``event`` with the wall clock, the pid and the message id."""
    line = f"{event} {time.time():.6f} {os.getpid()} {pashq.current().id}\n"
    fd = os.open(os.environ["PASHQ_TEST_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@attrs.define
class RedisUnique(pashq.Message, type_name="pashq_redis_tests.unique", unique_for=600):
    """Unique per account for ten minutes."""

    account_id: int

    def process_message(self) -> None:
        """Record the start."""
        record("start")


@attrs.define
class RedisRated(pashq.Message, type_name="pashq_redis_tests.rated", rate_limit="40/s"):
    """At most 40 starts in any second, across every worker."""

    n: int

    def process_message(self) -> None:
        """Record the start."""
        record("start")


@attrs.define
class RedisCapped(pashq.Message, type_name="pashq_redis_tests.capped", max_concurrency=2):
    """At most two running at once, across every worker."""

    n: int

    def process_message(self) -> None:
        """Record start and end around a short pause."""
        record("start")
        time.sleep(0.05)
        record("end")

"""Messages of the coordination tests, imported by the test processes and the workers.

Handlers append one line per event to the file named by ``PASHQ_TEST_RECORD`` (one
``write`` of a short line with ``O_APPEND``, so lines of several processes never mix):
``start <time.time()> <pid> <message id>`` and ``end ...``.
"""

from __future__ import annotations

import os
import time

import attrs

import pashq


def record(event: str) -> None:
    """Append ``event`` with the wall clock, the pid and the message id."""
    path = os.environ["PASHQ_TEST_RECORD"]
    line = f"{event} {time.time():.6f} {os.getpid()} {pashq.current().id}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@attrs.define
class SyncAccount(pashq.Message, type_name="coord.sync_account", unique_for=600):
    """Unique per account for ten minutes."""

    account_id: int

    def process_message(self) -> None:
        record("start")


@attrs.define
class SyncOnStart(
    pashq.Message, type_name="coord.sync_on_start", unique_for=600, unique_until="start"
):
    """Unique until its processing starts."""

    account_id: int

    def process_message(self) -> None:
        record("start")
        time.sleep(float(os.environ.get("PASHQ_TEST_SLEEP", "0")))


@attrs.define
class CallApi(pashq.Message, type_name="coord.call_api", rate_limit="50/s"):
    """At most 50 starts in any second, across every worker."""

    n: int

    def process_message(self) -> None:
        record("start")


@attrs.define
class PerAccount(pashq.Message, type_name="coord.per_account", rate_limit="5/s"):
    """Five per second per account."""

    account_id: int
    n: int

    def get_limit_key(self) -> str:
        return str(self.account_id)

    def process_message(self) -> None:
        record(f"start-{self.account_id}")


@attrs.define
class Render(pashq.Message, type_name="coord.render", max_concurrency=2):
    """At most two running at once, across every worker."""

    n: int

    def process_message(self) -> None:
        record("start")
        time.sleep(0.05)
        record("end")


@attrs.define
class Tick(pashq.Message, type_name="coord.tick"):
    """Dispatched by the schedulers of the schedule tests."""

    def process_message(self) -> None:
        record("start")

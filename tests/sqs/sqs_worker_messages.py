"""Message classes for the SQS reliability tests, importable by ``pashq work --import``.

Each records what it processes by appending a line to the file named by
``PASHQ_SQS_TEST_RECORD`` (one ``write`` on an ``O_APPEND`` descriptor per message, so a
SIGKILL never leaves half a line).
"""

from __future__ import annotations

import os
import time

import attrs

from pashq import Message


def record(line: str) -> None:
    """Append one line to the record file."""
    fd = os.open(os.environ["PASHQ_SQS_TEST_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


@attrs.define
class Numbered(Message, type_name="tests.sqs.numbered"):
    """Records its number."""

    n: int

    def process_message(self) -> None:
        """Record the number."""
        record(str(self.n))


@attrs.define
class Slow(Message, type_name="tests.sqs.slow"):
    """Records its start, works ``seconds``, records its end."""

    key: str
    seconds: float

    def process_message(self) -> None:
        """Record start and end around the work."""
        record(f"start {self.key}")
        time.sleep(self.seconds)
        record(f"end {self.key}")


@attrs.define
class Grouped(Message, type_name="tests.sqs.grouped"):
    """Records ``group:n``; its FIFO group is ``group``. ``a:0`` takes 0.3 s, so a later
    message of group ``a`` run in parallel would finish first."""

    group: str
    n: int
    group_by = "group"

    def process_message(self) -> None:
        """Record group and number."""
        if (self.group, self.n) == ("a", 0):
            time.sleep(0.3)
        record(f"{self.group}:{self.n}")

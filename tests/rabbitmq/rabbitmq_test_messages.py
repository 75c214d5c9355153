"""Message classes for the RabbitMQ reliability tests (also imported by worker subprocesses).

``Recorded`` appends its number to the file named by ``PASHQ_TEST_RECORD`` when that is
set (worker subprocesses), else to an in-memory list per ``key``.
"""

from __future__ import annotations

import collections
import os
import threading
import time

import attrs

from pashq import Message

_lock = threading.Lock()
_seen: dict[str, list[int]] = collections.defaultdict(list)


def seen(key: str) -> list[int]:
    """Numbers processed in this process under ``key``."""
    with _lock:
        return list(_seen[key])


@attrs.define
class Recorded(Message, type_name="pashq_rabbitmq_tests.recorded"):
    """Sleeps ``sleep`` seconds, then records ``n``."""

    key: str
    n: int
    sleep: float = 0.0

    def process_message(self) -> None:
        """Record the number (to the file or memory)."""
        if self.sleep:
            time.sleep(self.sleep)
        path = os.environ.get("PASHQ_TEST_RECORD")
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f"{self.n}\n")
        else:
            with _lock:
                _seen[self.key].append(self.n)


@attrs.define
class Invalid(Message, type_name="pashq_rabbitmq_tests.invalid"):
    """Fails validation: dead-lettered at once."""

    n: int

    def validate_message(self) -> bool:
        """Always invalid."""
        return False

    def process_message(self) -> None:
        """Never called."""


@attrs.define
class Failing(Message, type_name="pashq_rabbitmq_tests.failing"):
    """Always raises: retried, then dead-lettered."""

    n: int

    def process_message(self) -> None:
        """Fail."""
        raise RuntimeError(f"failing \udc80 message {self.n}")

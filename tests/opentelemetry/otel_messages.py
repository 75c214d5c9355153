"""Message classes of the OpenTelemetry tests, imported by the test process (producer) and
by the ``pashq work`` subprocesses (consumers)."""

from __future__ import annotations

import attrs

import pashq


@attrs.define
class Fine(pashq.Message, type_name="pashq_tests.otel.fine"):
    """Succeeds at once."""

    n: int

    def process_message(self) -> None:
        """Nothing to do."""


@attrs.define
class FailsTwice(pashq.Message, type_name="pashq_tests.otel.fails_twice"):
    """Fails on attempts 1 and 2, succeeds on attempt 3."""

    max_attempts = 5
    retry_delay = 0.05
    retry_delay_max = 0.05
    n: int

    def process_message(self) -> None:
        """Raise before the third attempt."""
        attempt = pashq.current().attempts
        if attempt < 3:
            raise RuntimeError(f"attempt {attempt} fails")


@attrs.define
class AlwaysFails(pashq.Message, type_name="pashq_tests.otel.always_fails"):
    """Fails every time: dead-lettered after two attempts."""

    max_attempts = 2
    retry_delay = 0.05
    retry_delay_max = 0.05
    n: int

    def process_message(self) -> None:
        """Always raise."""
        raise ValueError(f"card {self.n} declined")

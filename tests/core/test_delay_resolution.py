"""A backend that rounds delays (SQS: whole seconds) gets the rounded delay logged and waited for.

The worker logs ``retrying in N s`` with the delay the backend really keeps, declared by
``Capabilities.delay_resolution``; ``until_empty`` waits for that delay, not the shorter one.
"""

from __future__ import annotations

import logging
import uuid

import attrs
import pytest

from pashq import Worker
from pashq.testing import make_connection
from pashq.testing.messages import AlwaysFails
from pashq.worker.settlement import Settlement
from pashq.worker.stats import WorkerStats


@pytest.mark.parametrize(
    ("resolution", "delay", "kept"),
    [(0.0, 0.3, 0.3), (1.0, 0.3, 1.0), (1.0, 1.0, 1.0), (1.0, 1.2, 2.0), (0.5, 0.7, 1.0)],
)
def test_backend_delay_rounds_up_to_the_resolution(
    resolution: float, delay: float, kept: float
) -> None:
    settlement = Settlement(None, WorkerStats(), 10, "c", delay_resolution=resolution)
    assert settlement.backend_delay(delay) == pytest.approx(kept)


def test_retry_log_line_shows_the_delay_the_backend_keeps(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = make_connection({"type": "memory"})
    conn.capabilities = attrs.evolve(conn.capabilities, delay_resolution=1.0)
    queue = f"resolution-{uuid.uuid4().hex[:8]}"
    conn.dispatch(queue, AlwaysFails(key=queue))
    with caplog.at_level(logging.INFO, logger="pashq"):
        Worker(queue, connection=conn, install_signal_handlers=False).run(until_empty=True)
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == AlwaysFails.max_attempts - 1, retries
    assert all("retrying in 1.00s" in line for line in retries), retries
    conn.close()

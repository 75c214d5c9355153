"""The core's built-in memory driver passes the whole driver contract."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pashq.testing import (
    CoordinationContract,
    DeferContract,
    DriverContract,
    QueueUnderTest,
    make_connection,
)


class TestMemoryContract(DriverContract, CoordinationContract, DeferContract):
    """memory: leases, delays, nack, dead letters, stats, purge in one process."""

    @pytest.fixture
    def queue_under_test(self) -> Iterator[QueueUnderTest]:
        connection = make_connection({"type": "memory", "lease": 1.0})
        yield QueueUnderTest(connection, f"contract-{uuid.uuid4().hex[:8]}", lease=1.0)
        connection.close()

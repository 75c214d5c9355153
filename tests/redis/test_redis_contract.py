"""The pashq driver contract on the shared Redis (every capability the driver declares)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pashq.testing import DriverContract, QueueUnderTest, make_connection

LEASE = 2.0


class TestRedisContract(DriverContract):
    """redis: persistent, delays, leases, extension, nack delay, dead letters, stats, purge,
    priorities, fork safety."""

    @pytest.fixture
    def queue_under_test(self, redis_table: dict[str, Any]) -> Iterator[QueueUnderTest]:
        table = dict(redis_table, lease=LEASE)
        connection = make_connection(table)
        name = f"contract-{uuid.uuid4().hex[:8]}"
        yield QueueUnderTest(
            connection, name, open_connection=lambda: make_connection(table), lease=LEASE
        )
        cleaner = make_connection(table)
        with contextlib.suppress(Exception):
            for queue in (name, f"{name}-other"):
                cleaner.driver.delete_queue(queue)  # type: ignore[attr-defined]
        cleaner.close()
        connection.close()

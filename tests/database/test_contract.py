"""The core's driver contract suite, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pashq.testing import DriverContract, QueueUnderTest, make_connection

from .conftest import Backends


def _queue(backends: Backends, backend: str) -> Iterator[QueueUnderTest]:
    table = backends.table(backend, lease=2.0)
    conn = make_connection(table)
    yield QueueUnderTest(
        connection=conn,
        name=f"contract-{uuid.uuid4().hex[:8]}",
        open_connection=lambda: make_connection(table),
        lease=2.0,
    )
    conn.close()


class TestSQLiteContract(DriverContract):
    @pytest.fixture
    def queue_under_test(self, backends: Backends) -> Iterator[QueueUnderTest]:
        yield from _queue(backends, "sqlite")


@pytest.mark.postgresql
class TestPostgreSQLContract(DriverContract):
    @pytest.fixture
    def queue_under_test(self, backends: Backends) -> Iterator[QueueUnderTest]:
        yield from _queue(backends, "postgresql")


@pytest.mark.mariadb
class TestMariaDBContract(DriverContract):
    @pytest.fixture
    def queue_under_test(self, backends: Backends) -> Iterator[QueueUnderTest]:
        yield from _queue(backends, "mariadb")

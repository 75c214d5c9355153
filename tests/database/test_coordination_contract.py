"""The coordination and defer contracts on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pashq.testing import CoordinationContract, DeferContract, QueueUnderTest, make_connection

from .conftest import Backends


def _queue(backends: Backends, backend: str) -> Iterator[QueueUnderTest]:
    table = backends.table(backend, lease=2.0)
    conn = make_connection(table)
    yield QueueUnderTest(
        connection=conn,
        name=f"coord-{uuid.uuid4().hex[:8]}",
        open_connection=lambda: make_connection(table),
        lease=2.0,
    )
    conn.close()


class TestSQLiteCoordination(CoordinationContract, DeferContract):
    @pytest.fixture
    def queue_under_test(self, backends: Backends) -> Iterator[QueueUnderTest]:
        yield from _queue(backends, "sqlite")


@pytest.mark.postgresql
class TestPostgreSQLCoordination(CoordinationContract, DeferContract):
    @pytest.fixture
    def queue_under_test(self, backends: Backends) -> Iterator[QueueUnderTest]:
        yield from _queue(backends, "postgresql")


@pytest.mark.mariadb
class TestMariaDBCoordination(CoordinationContract, DeferContract):
    @pytest.fixture
    def queue_under_test(self, backends: Backends) -> Iterator[QueueUnderTest]:
        yield from _queue(backends, "mariadb")

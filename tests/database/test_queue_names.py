"""Queue names the tables cannot hold are refused up front, at dispatch and at worker start."""

from __future__ import annotations

import uuid

import pytest

from pashq import Worker
from pashq.connection import Connection
from pashq.errors import QueueNameError
from pashq.testing import drain

from .conftest import Backends
from .database_test_messages import Tick


def _name(length: int) -> str:
    head = f"q-{uuid.uuid4().hex[:10]}-"
    return head + "x" * (length - len(head))


def test_queue_name_longer_than_the_column_is_refused_at_dispatch(
    connection: Connection,
) -> None:
    """300 characters: a QueueNameError naming the limit, not a raw database error."""
    with pytest.raises(QueueNameError, match=r"300 characters long; the most is 255"):
        connection.dispatch(_name(300), Tick(1))


def test_queue_name_longer_than_the_column_is_refused_at_worker_start(
    connection: Connection,
) -> None:
    """A worker on such a queue fails before its first claim."""
    worker = Worker(_name(256), connection=connection, install_signal_handlers=False)
    with pytest.raises(QueueNameError, match=r"256 characters long"):
        worker.run(until_empty=True)


def test_queue_name_of_the_full_column_length_works(connection: Connection) -> None:
    """255 characters is stored and claimed like any other name."""
    name = _name(255)
    (sent,) = connection.dispatch_many(name, [Tick(1)])
    assert [d.id for d in drain(connection, name, 1)] == [sent]


def test_queue_name_with_a_lone_surrogate_is_refused(connection: Connection) -> None:
    """No database stores a lone surrogate (it is not UTF-8)."""
    with pytest.raises(QueueNameError, match=r"lone surrogate"):
        connection.dispatch(f"q-{uuid.uuid4().hex[:8]}-\ud800", Tick(1))


def test_queue_names_differing_in_case_are_different_queues(connection: Connection) -> None:
    """'Jobs' and 'jobs' never share rows (MySQL/MariaDB compare case-insensitively by
    default; the driver's tables use a binary collation for queue names)."""
    base = f"q-{uuid.uuid4().hex[:8]}"
    connection.dispatch(base.upper(), Tick(1))
    assert connection.stats(base.lower()).ready == 0
    assert connection.stats(base.upper()).ready == 1


@pytest.mark.mariadb
def test_queue_name_with_a_trailing_space_is_refused_on_mariadb(backends: Backends) -> None:
    """MySQL/MariaDB ignore trailing spaces in comparisons: 'jobs ' would read 'jobs'."""
    conn = backends.connect("mariadb")
    try:
        with pytest.raises(QueueNameError, match=r"ends with a space"):
            conn.dispatch(f"q-{uuid.uuid4().hex[:8]} ", Tick(1))
    finally:
        conn.close()

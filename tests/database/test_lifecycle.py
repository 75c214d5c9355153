"""Issue 9's middleware scenario on the database driver: dispatch and process wrappers
see every batch and every outcome, with headers and attempts (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

from lifecycle_scenario import check_scenario, run_scenario

from pashq.connection import Connection


def test_recorder_sees_every_dispatch_batch_and_every_outcome(
    connection: Connection, queue_name: str
) -> None:
    check_scenario(run_scenario(connection, queue_name))

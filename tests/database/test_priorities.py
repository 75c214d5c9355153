"""Priorities on the database driver: claim order, the index that serves it, retried dead
letters, and tables made by pashq-database 0.1 (no priority columns)."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from pashq.cli import main
from pashq.connection import Connection
from pashq.delivery import OutgoingMessage
from pashq_database.upgrade import OutdatedTablesError

from .conftest import BACKENDS, Backends

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def _push(conn: Connection, queue: str, priorities: list[int]) -> list[str]:
    messages = [OutgoingMessage(uuid.uuid4().hex, "t", b"{}", priority=p) for p in priorities]
    conn.hook.pashq_push(queue=queue, messages=messages, options={})
    return [m.id for m in messages]


def _old_tables(url: str, prefix: str) -> None:
    """Create the tables exactly as pashq-database 0.1 did (no priority columns)."""
    metadata = sa.MetaData()
    key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    messages = sa.Table(
        f"{prefix}messages",
        metadata,
        sa.Column("id", key, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("available_at", sa.Double, nullable=False),
        sa.Column("lease_expires_at", sa.Double, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Index(f"{prefix}messages_claim", "queue", "available_at", "id"),
        sqlite_autoincrement=True,
    )
    sa.Table(
        f"{prefix}dead_letters",
        metadata,
        sa.Column("id", key, primary_key=True, autoincrement=True),
        sa.Column("queue", sa.String(255), nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("traceback", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("failed_at", sa.Double, nullable=False),
    )
    engine = sa.create_engine(url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                sa.insert(messages).values(
                    queue="old",
                    message_id="waiting-before-the-upgrade",
                    body=b"{}",
                    attempts=0,
                    available_at=0.0,
                    created_at=0.0,
                )
            )
    finally:
        engine.dispose()


@pytest.fixture
def old_prefix(backends: Backends, backend: str) -> str:
    """A table prefix whose tables were made by pashq-database 0.1."""
    prefix = f"old{uuid.uuid4().hex[:6]}_"
    backends.used.add((backend, prefix))  # dropped at the end of the session
    _old_tables(backends.url(backend), prefix)
    return prefix


def test_claim_takes_higher_priority_first_then_oldest(
    connection: Connection, queue_name: str
) -> None:
    ids = _push(connection, queue_name, [0, 5, 9, 5, 0, 1])
    got = connection.hook.pashq_pull(queue=queue_name, max_messages=10, timeout=0)
    assert [d.id for d in got] == [ids[2], ids[1], ids[3], ids[5], ids[0], ids[4]]


def test_claim_in_small_batches_keeps_the_priority_order(
    connection: Connection, queue_name: str
) -> None:
    ids = _push(connection, queue_name, [1, 2, 3, 4, 5, 6])
    got: list[str] = []
    for _ in range(3):
        batch = connection.hook.pashq_pull(queue=queue_name, max_messages=2, timeout=0)
        got.extend(d.id for d in batch)
    assert got == ids[::-1]


def test_retried_dead_letter_keeps_its_priority(connection: Connection, queue_name: str) -> None:
    low, high = _push(connection, queue_name, [0, 7])
    (first,) = connection.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=0)
    assert first.id == high
    connection.hook.pashq_dead_letter(
        queue=queue_name, delivery=first, reason="failed", traceback=None
    )
    assert connection.retry_failed(queue_name) == 1
    (again,) = connection.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=0)
    assert (again.id, again.attempts) == (high, 1)
    (last,) = connection.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=0)
    assert last.id == low


def test_released_message_keeps_its_priority(connection: Connection, queue_name: str) -> None:
    low, high = _push(connection, queue_name, [0, 4])
    got = connection.hook.pashq_pull(queue=queue_name, max_messages=2, timeout=0)
    assert [d.id for d in got] == [high, low]
    connection.hook.pashq_nack(queue=queue_name, deliveries=got, delay=0)
    again = connection.hook.pashq_pull(queue=queue_name, max_messages=2, timeout=0)
    assert [d.id for d in again] == [high, low]


def test_claim_is_served_by_the_claim_index_without_a_sort(
    connection: Connection, queue_name: str
) -> None:
    driver: Any = connection.driver
    for _ in range(4):
        _push(connection, queue_name, [i % 3 * 3 for i in range(250)])
    table = driver.schema.messages.name
    index = f"{driver.schema.prefix}messages_claim"
    query = (
        f"SELECT id FROM {table} WHERE queue = '{queue_name}' AND available_at <= 1e12 "
        "ORDER BY priority DESC, available_at, id LIMIT 10"
    )
    with driver.engine.connect() as conn:
        name = conn.dialect.name
        if name == "sqlite":
            plan = " ".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}"))
            assert index in plan and "TEMP B-TREE" not in plan, plan
        elif name == "postgresql":
            conn.exec_driver_sql(f"ANALYZE {table}")
            plan = " ".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {query} FOR UPDATE"))
            assert f"Index Scan using {index}" in plan and "Sort" not in plan, plan
            assert "available_at <=" in plan.split("Index Cond:")[1], plan
        else:
            conn.exec_driver_sql(f"ANALYZE TABLE {table}")
            rows = [dict(r._mapping) for r in conn.exec_driver_sql(f"EXPLAIN {query}")]
            assert rows[0]["key"] == index, rows
            assert "filesort" not in str(rows[0]["Extra"]), rows


def test_outdated_tables_are_refused_naming_the_fix(
    backends: Backends, backend: str, old_prefix: str
) -> None:
    conn = backends.connect(backend, prefix=old_prefix, create_tables=False)
    try:
        with pytest.raises(OutdatedTablesError) as info:
            conn.hook.pashq_pull(queue="old", max_messages=1, timeout=0)
    finally:
        conn.close()
    text = str(info.value)
    assert f"{old_prefix}messages: column priority" in text
    assert f"{old_prefix}dead_letters: column priority" in text
    assert "pashq database create" in text and "pashq database migration --upgrade" in text


def test_create_tables_adds_the_priority_columns_to_old_tables(
    backends: Backends, backend: str, old_prefix: str
) -> None:
    conn = backends.connect(backend, prefix=old_prefix, create_tables=True)
    try:
        ids = _push(conn, "old", [3])
        got = conn.hook.pashq_pull(queue="old", max_messages=5, timeout=0)
        assert [d.id for d in got] == [*ids, "waiting-before-the-upgrade"]
        assert conn.driver.outdated() == []
    finally:
        conn.close()


def _config(tmp_path: Path, url: str, prefix: str) -> str:
    path = tmp_path / "pashq.toml"
    path.write_text(
        f'[queues.default]\ntype = "database"\nurl = "{url}"\ntable_prefix = "{prefix}"\n'
        "create_tables = false\n",
        encoding="utf-8",
    )
    return str(path)


def test_database_create_adds_what_old_tables_lack(
    backends: Backends, backend: str, old_prefix: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, backends.url(backend), old_prefix)
    result = CliRunner().invoke(main, ["database", "create", "--config", config])
    assert result.exit_code == 0, result.output
    assert f"added {old_prefix}messages: column priority" in result.output
    again = CliRunner().invoke(main, ["database", "create", "--config", config])
    assert "tables already exist" in again.output
    conn = backends.connect(backend, prefix=old_prefix, create_tables=False)
    try:
        (got,) = conn.hook.pashq_pull(queue="old", max_messages=5, timeout=0)
        assert got.id == "waiting-before-the-upgrade"
    finally:
        conn.close()


def test_upgrade_revision_brings_old_tables_up_to_date(
    backends: Backends, backend: str, old_prefix: str, tmp_path: Path
) -> None:
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    url = backends.url(backend)
    config = _config(tmp_path, url, old_prefix)
    result = CliRunner().invoke(
        main,
        [
            "database",
            "migration",
            "--upgrade",
            "--config",
            config,
            "-d",
            str(tmp_path),
            "--rev-id",
            "up1",
        ],
    )
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path.name == "up1_add_pashq_priority_columns.py"
    spec = importlib.util.spec_from_file_location("revision_up1", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as c, Operations.context(MigrationContext.configure(c)):
            module.upgrade()
        conn = backends.connect(backend, prefix=old_prefix, create_tables=False)
        try:
            assert conn.driver.outdated() == []
            ids = _push(conn, "old", [9])
            got = conn.hook.pashq_pull(queue="old", max_messages=5, timeout=0)
            assert [d.id for d in got] == [*ids, "waiting-before-the-upgrade"]
        finally:
            conn.close()
        with engine.begin() as c, Operations.context(MigrationContext.configure(c)):
            module.downgrade()
        columns = {c["name"] for c in sa.inspect(engine).get_columns(f"{old_prefix}messages")}
        assert "priority" not in columns
    finally:
        engine.dispose()

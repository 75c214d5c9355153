"""``pashq database create | drop | sql | migration`` through the real ``pashq`` command."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from pashq.cli import main
from pashq.delivery import OutgoingMessage
from pashq.testing import make_connection

from .conftest import BACKENDS, Backends


def _config(tmp_path: Path, table: dict[str, Any]) -> Path:
    lines = ["[queues.default]"]
    for key, value in table.items():
        rendered = str(value).lower() if isinstance(value, bool) else repr(value)
        lines.append(f"{key} = {rendered}".replace("'", '"'))
    path = tmp_path / "pashq.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_create_then_drop(backends: Backends, backend: str, tmp_path: Path) -> None:
    """create makes both tables (and says so); drop --yes removes them."""
    prefix = f"cli{uuid.uuid4().hex[:6]}_"
    table = backends.table(backend, prefix=prefix, create_tables=False)
    config = str(_config(tmp_path, table))
    assert "created" in _invoke("database", "create", "--config", config)
    assert {f"{prefix}messages", f"{prefix}dead_letters"} <= _tables(table["url"])
    assert "already exist" in _invoke("database", "create", "--config", config)
    _invoke("database", "drop", "--yes", "--config", config)
    assert not {f"{prefix}messages", f"{prefix}dead_letters"} & _tables(table["url"])


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [("postgresql", "DOUBLE PRECISION"), ("mariadb", "LONGBLOB"), ("sqlite", "BLOB")],
)
def test_sql_prints_the_ddl_for_a_dialect(tmp_path: Path, dialect: str, expected: str) -> None:
    """sql prints CREATE TABLE and the claim index; no database needed."""
    config = str(_config(tmp_path, {"type": "database", "url": f"sqlite:///{tmp_path}/x.db"}))
    out = _invoke("database", "sql", "--dialect", dialect, "--config", config)
    assert "CREATE TABLE pashq_messages" in out and "CREATE TABLE pashq_dead_letters" in out
    assert (
        "CREATE INDEX pashq_messages_claim ON pashq_messages "
        "(queue, priority DESC, available_at, id)" in out
    )
    assert expected in out


def test_sql_defaults_to_the_configured_dialect(tmp_path: Path) -> None:
    config = str(
        _config(
            tmp_path,
            {
                "type": "database",
                "url": "postgresql+psycopg://u:pw@127.0.0.1:1/x",
            },
        )
    )
    assert "BYTEA" in _invoke("database", "sql", "--config", config)


def test_migration_writes_an_alembic_revision_that_creates_the_tables(tmp_path: Path) -> None:
    """The revision file runs under Alembic: upgrade creates the tables, downgrade drops."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations

    url = f"sqlite:///{tmp_path}/app.sqlite3"
    config = str(_config(tmp_path, {"type": "database", "url": url, "table_prefix": "app_"}))
    out = _invoke(
        "database",
        "migration",
        "--config",
        config,
        "-d",
        str(tmp_path / "versions"),
        "--rev-id",
        "abc123",
        "--down-revision",
        "f00d",
    )
    path = Path(out.strip())
    assert path.name == "abc123_create_pashq_tables.py"
    spec = importlib.util.spec_from_file_location("revision_abc123", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (module.revision, module.down_revision) == ("abc123", "f00d")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
            module.upgrade()
        assert {"app_messages", "app_dead_letters"} <= _tables(url)
        # The driver works on the tables Alembic made (no create_tables).
        conn = make_connection(
            {"type": "database", "url": url, "table_prefix": "app_", "create_tables": False}
        )
        try:
            message = OutgoingMessage("m1", "t", b"{}")
            conn.hook.pashq_push(queue="q", messages=[message], options={})
            (got,) = conn.hook.pashq_pull(queue="q", max_messages=5, timeout=0)
            conn.hook.pashq_dead_letter(queue="q", delivery=got, reason="r", traceback=None)
            assert [d.id for d in conn.failed("q")] == ["m1"]
        finally:
            conn.close()
        with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
            module.downgrade()
        assert not {"app_messages", "app_dead_letters"} & _tables(url)
    finally:
        engine.dispose()


def test_commands_refuse_a_connection_of_another_driver(tmp_path: Path) -> None:
    config = str(_config(tmp_path, {"type": "memory"}))
    result = CliRunner().invoke(main, ["database", "sql", "--config", config])
    assert result.exit_code != 0 and "not 'database'" in result.output

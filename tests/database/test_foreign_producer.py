"""The SQL of docs/database.md "Producing without pashq", run with each database's plain
client; a pashq worker then processes the message."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pashq import Worker
from pashq.connection import Connection

from .conftest import Backends
from .database_test_messages import Tick

DOCS = Path(__file__).parents[2] / "docs" / "database.md"


def _documented_sql(dialect: str) -> list[str]:
    """The statements of the ``-- pashq producer: <dialect>`` block of the docs."""
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(rf"```sql\n-- pashq producer: {dialect}\n(.*?)```", text, re.S)
    assert found, f"no producer SQL for {dialect} in {DOCS}"
    return [s.strip() for s in found.group(1).split(";") if s.strip()]


def _envelope(message_id: str, n: int) -> bytes:
    # A JSON escape in a string: it must survive as bytes (a text-to-bytea cast breaks it).
    data = {
        "v": 1,
        "id": message_id,
        "type": Tick.type_name,
        "body": {"n": n, "note": "line\nbreak \u00e9 \\ backslash"},
        "created_at": "2026-11-27T18:00:00.000000Z",
        "headers": {},
    }
    return json.dumps(data, ensure_ascii=True).encode("utf-8")


def _run_plain(backend: str, url: str, statements: list[str], params: dict[str, Any]) -> None:
    parsed = sa.make_url(url)
    if backend == "sqlite":
        assert parsed.database
        db = sqlite3.connect(parsed.database, timeout=30)
        try:
            for sql in statements:
                db.execute(sql, params)
            db.commit()
        finally:
            db.close()
    elif backend == "postgresql":
        import psycopg

        with psycopg.connect(
            host=parsed.host,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            dbname=parsed.database,
        ) as pg:
            for sql in statements:
                pg.execute(sql, params)
    else:
        import pymysql

        my = pymysql.connect(
            host=parsed.host,
            port=parsed.port or 3306,
            user=parsed.username or "root",
            password=parsed.password or "",
            database=parsed.database,
        )
        try:
            with my.cursor() as cursor:
                for sql in statements:
                    cursor.execute(sql, params)
            my.commit()
        finally:
            my.close()


def test_documented_plain_insert_is_processed_by_a_worker(
    backends: Backends,
    backend: str,
    connection: Connection,
    queue_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The docs' INSERT (and pg_notify), sent with psycopg / PyMySQL / sqlite3, makes a
    message that a pashq worker decodes and runs."""
    dialect = "mariadb" if backend == "mariadb" else backend
    prefix = backends.prefix
    statements = [
        s.replace("pashq_messages", f"{prefix}messages") for s in _documented_sql(dialect)
    ]
    connection.check_queue_name(queue_name)
    connection.hook.pashq_declare(queue=queue_name)  # the tables exist
    message_id = uuid.uuid4().hex
    params = {"queue": queue_name, "id": message_id, "body": _envelope(message_id, 7), "delay": 0.0}
    _run_plain(backend, backends.url(backend), statements, params)

    monkeypatch.setenv("PASHQ_TEST_OUT", str(tmp_path))
    worker = Worker(queue_name, connection=connection, install_signal_handlers=False)
    worker.run(until_empty=True)
    outputs = [p.read_text().split() for p in tmp_path.glob("*.txt")]
    assert outputs == [["7"]]
    assert connection.failed(queue_name) == []

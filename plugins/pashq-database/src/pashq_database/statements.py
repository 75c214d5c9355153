"""Prebuilt statements of the hot path: insert and ack as driver-level SQL.

SQLAlchemy Core spends more time building parameters for a 500-row ``executemany`` than
SQLite spends storing the rows, so the two statements that run once per message (the
INSERT of a push, the DELETE of an ack) are rendered once per dialect as plain SQL with the
DB-API's own placeholders and sent with tuples through ``exec_driver_sql``. Every other
statement stays SQLAlchemy Core.

On PostgreSQL (psycopg 3) a push is one ``INSERT ... SELECT ... FROM unnest(<arrays>)`` per
chunk (psycopg's ``executemany`` pays a protocol message per row, and a long multi-row
``VALUES`` list is re-parsed on every call), and the NOTIFY that wakes idle workers rides
in the same statement
(``WITH i AS (INSERT ...) SELECT pg_notify(...)``), so a single ``dispatch()`` costs the
same round trips as a bare INSERT + COMMIT. An ack is ``DELETE ... WHERE id = ANY(%s)``
with one array parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from pashq_database.schema import Schema

__all__ = ["INSERT_COLUMNS", "HotPath"]

#: Column order of the rows given to :meth:`HotPath.insert` (``attempts`` is 0 and
#: ``lease_expires_at`` NULL for every new row).
INSERT_COLUMNS = ("queue", "message_id", "body", "available_at", "created_at")
_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


class HotPath:
    """Insert and delete for one schema on one dialect (and DB-API driver)."""

    def __init__(self, schema: Schema, dialect: sa.Dialect) -> None:
        """Render the SQL once (falls back to Core for an unknown placeholder style)."""
        self.key = (dialect.name, dialect.driver)
        self._mark = _MARKS.get(dialect.paramstyle)
        table = schema.messages
        self._insert_core = sa.insert(table)
        self._delete_core = sa.delete(table).where(
            table.c.id.in_(sa.bindparam("ids", expanding=True))
        )
        name = dialect.identifier_preparer.format_table(table)
        self._array = dialect.name == "postgresql" and dialect.driver == "psycopg"
        if self._mark is not None:
            m = self._mark
            # PyMySQL turns executemany into one multi-row INSERT only when VALUES holds
            # nothing but placeholders; elsewhere the constant columns stay in the SQL.
            self._pad = dialect.name in ("mysql", "mariadb")
            zero, null = (m, m) if self._pad else ("0", "NULL")
            self._insert_sql = (
                f"INSERT INTO {name} (queue, message_id, body, attempts, available_at, "
                f"lease_expires_at, created_at) VALUES ({m}, {m}, {m}, {zero}, {m}, {null}, {m})"
            )
            self._delete_sql = f"DELETE FROM {name} WHERE id "
            self._insert_notify = (
                f"WITH pashq_insert AS ({self._insert_sql}) SELECT pg_notify(%s, %s)"
            )
        self._in_lists: dict[int, str] = {}
        # One statement with three array parameters, whatever the number of rows: short
        # enough for psycopg's query cache and for a server-side prepared statement.
        self._unnest = (
            f"INSERT INTO {name} (queue, message_id, body, attempts, available_at, "
            "lease_expires_at, created_at) SELECT %s, u.m, u.b, 0, u.a, NULL, %s "
            "FROM unnest(%b::varchar[], %b::bytea[], %b::float8[]) AS u(m, b, a)"
        )
        self._unnest_notify = f"WITH pashq_insert AS ({self._unnest}) SELECT pg_notify(%s, %s)"

    def _usable(self, connection: sa.Connection) -> bool:
        dialect = connection.dialect
        return self._mark is not None and (dialect.name, dialect.driver) == self.key

    @property
    def merges_notify(self) -> bool:
        """Whether :meth:`insert` sends the NOTIFY itself (PostgreSQL with psycopg 3)."""
        return self._array

    def insert(
        self,
        connection: sa.Connection,
        rows: Sequence[tuple[Any, ...]],
        notify: tuple[str, str] | None = None,
    ) -> bool:
        """Insert rows (tuples in :data:`INSERT_COLUMNS` order) on ``connection``.

        :param notify: ``(channel, payload)`` to send in the same statement, where possible.
        :returns: whether the notification was sent.
        """
        if not self._usable(connection):
            connection.execute(
                self._insert_core,
                [
                    {
                        "attempts": 0,
                        "lease_expires_at": None,
                        **dict(zip(INSERT_COLUMNS, r, strict=True)),
                    }
                    for r in rows
                ],
            )
            return False
        if self._array and len(rows) == 1:
            # One row: a plain VALUES insert is cheaper than building arrays.
            if notify is not None:
                connection.exec_driver_sql(self._insert_notify, (*rows[0], *notify))
                return True
            connection.exec_driver_sql(self._insert_sql, rows[0])
            return False
        if self._array:
            first = rows[0]
            params: list[Any] = [
                first[0],
                first[4],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
            ]
            if notify is not None:
                params.extend(notify)
                connection.exec_driver_sql(self._unnest_notify, tuple(params))
                return True
            connection.exec_driver_sql(self._unnest, tuple(params))
            return False
        if self._pad:
            rows = [(r[0], r[1], r[2], 0, r[3], None, r[4]) for r in rows]
        if len(rows) == 1:
            connection.exec_driver_sql(self._insert_sql, rows[0])
        else:
            connection.exec_driver_sql(self._insert_sql, list(rows))
        return False

    def delete(self, connection: sa.Connection, ids: Sequence[int]) -> None:
        """Delete the rows with these ids in one statement."""
        if not self._usable(connection):
            connection.execute(self._delete_core, {"ids": list(ids)})
        elif self._array:
            connection.exec_driver_sql(self._delete_sql + "= ANY(%s)", (list(ids),))
        else:
            sql = self._in_lists.get(len(ids))
            if sql is None:
                marks = ", ".join([str(self._mark)] * len(ids))
                sql = f"{self._delete_sql}IN ({marks})"
                if len(self._in_lists) < 64:
                    self._in_lists[len(ids)] = sql
            connection.exec_driver_sql(sql, tuple(ids))

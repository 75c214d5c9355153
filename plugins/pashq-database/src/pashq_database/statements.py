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
same round trips as a bare INSERT + COMMIT.

Times come from the server (:mod:`pashq_database.clock`): a row's ``available_at`` is the
server's ``now`` plus the message's delay. An ack is fenced on the claim (row id, attempt
count and the stored message id) and locks its rows in id order, like every other
multi-row statement of the driver, so two transactions of one worker (a heartbeat's lease
extension and an ack) never wait on each other in opposite orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from pashq_database.clock import db_now, now_sql
from pashq_database.schema import Schema

__all__ = ["INSERT_COLUMNS", "HotPath", "Receipt"]

#: Column order of the rows given to :meth:`HotPath.insert`: the delay (seconds) is added
#: to the server's clock; ``attempts`` is 0 and ``lease_expires_at`` NULL for every new row.
INSERT_COLUMNS = ("queue", "message_id", "body", "delay", "priority")
#: (row id, attempts of the claim, message id as stored): what identifies one claim.
Receipt = tuple[int, int, str]
_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
#: Longest multi-row INSERT sent to MySQL/MariaDB (PyMySQL's own executemany limit).
_MYSQL_STATEMENT = 1_000_000


class HotPath:
    """Insert and fenced delete for one schema on one dialect (and DB-API driver)."""

    def __init__(self, schema: Schema, dialect: sa.Dialect) -> None:
        """Render the SQL once (falls back to Core for an unknown placeholder style)."""
        self.key = (dialect.name, dialect.driver)
        self._mark = _MARKS.get(dialect.paramstyle)
        table = schema.messages
        now = db_now()
        self._insert_core = sa.insert(table).values(
            attempts=0,
            lease_expires_at=None,
            available_at=now + sa.bindparam("delay", type_=sa.Double),
            created_at=now,
        )
        self._delete_core = sa.delete(table).where(
            table.c.id == sa.bindparam("rid"),
            table.c.attempts == sa.bindparam("att"),
            table.c.message_id == sa.bindparam("mid"),
        )
        name = dialect.identifier_preparer.format_table(table)
        self._array = dialect.name == "postgresql" and dialect.driver == "psycopg"
        self._mysql = dialect.name in ("mysql", "mariadb")
        self._in_lists: dict[int, str] = {}
        if self._mark is not None:
            m = self._mark
            clock = now_sql(dialect.name)
            self._columns = (
                f"INSERT INTO {name} (queue, message_id, body, attempts, available_at, "
                "lease_expires_at, created_at, priority) VALUES "
            )
            self._row = f"({m}, {m}, {m}, 0, {clock} + {m}, NULL, {clock}, {m})"
            self._insert_sql = self._columns + self._row
            self._insert_notify = (
                f"WITH pashq_insert AS ({self._insert_sql}) SELECT pg_notify(%s, %s)"
            )
            self._delete_one = (
                f"DELETE FROM {name} WHERE id = {m} AND attempts = {m} AND message_id = {m}"
            )
            self._delete_mysql = f"DELETE FROM {name} WHERE id IN ("
            # One statement with four array parameters, whatever the number of rows: short
            # enough for psycopg's query cache and for a server-side prepared statement.
            self._unnest = (
                f"INSERT INTO {name} (queue, message_id, body, attempts, available_at, "
                f"lease_expires_at, created_at, priority) SELECT %s, u.m, u.b, 0, {clock} + "
                f"u.d, NULL, {clock}, u.p FROM unnest(%b::varchar[], %b::bytea[], "
                "%b::float8[], %b::int4[]) AS u(m, b, d, p)"
            )
            self._unnest_notify = f"WITH pashq_insert AS ({self._unnest}) SELECT pg_notify(%s, %s)"
            # The subquery locks the rows in id order (ORDER BY below FOR UPDATE), then the
            # DELETE finds them by primary key; a row claimed again since (other attempts)
            # fails the fence and stays.
            self._delete_pg = (
                f"DELETE FROM {name} WHERE id = ANY(ARRAY(SELECT id FROM {name} WHERE "
                "id = ANY(%b::int8[]) AND (id, attempts, message_id) IN (SELECT * FROM "
                "unnest(%b::int8[], %b::int4[], %b::varchar[])) ORDER BY id FOR UPDATE))"
            )

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
                self._insert_core, [dict(zip(INSERT_COLUMNS, r, strict=True)) for r in rows]
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
            params: list[Any] = [
                rows[0][0],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
                [r[4] for r in rows],
            ]
            if notify is not None:
                params.extend(notify)
                connection.exec_driver_sql(self._unnest_notify, tuple(params))
                return True
            connection.exec_driver_sql(self._unnest, tuple(params))
            return False
        if self._mysql:
            self._insert_mysql(connection, rows)
        elif len(rows) == 1:
            connection.exec_driver_sql(self._insert_sql, rows[0])
        else:
            connection.exec_driver_sql(self._insert_sql, list(rows))
        return False

    def _insert_mysql(self, connection: sa.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        # PyMySQL batches an executemany into one INSERT only when VALUES holds nothing but
        # placeholders, and the server clock is an expression: build the multi-row VALUES
        # here, in statements of about the size PyMySQL itself would send.
        part: list[tuple[Any, ...]] = []
        size = 0
        for row in rows:
            cost = 2 * len(row[2]) + 200  # the body is escaped on the wire
            if part and size + cost > _MYSQL_STATEMENT:
                self._send_values(connection, part)
                part, size = [], 0
            part.append(row)
            size += cost
        if part:
            self._send_values(connection, part)

    def _send_values(self, connection: sa.Connection, part: Sequence[tuple[Any, ...]]) -> None:
        flat = tuple(value for row in part for value in row)
        connection.exec_driver_sql(self._values(len(part)), flat)

    def _values(self, count: int) -> str:
        sql = self._in_lists.get(-count)
        if sql is None:
            sql = self._columns + ", ".join([self._row] * count)
            if len(self._in_lists) < 128:
                self._in_lists[-count] = sql
        return sql

    def delete(self, connection: sa.Connection, receipts: Sequence[Receipt]) -> int:
        """Delete the rows still held by these claims, locking them in id order.

        :param receipts: ``(row id, attempts, message id)`` of each claim, sorted by row id.
        :returns: how many rows were deleted (a row claimed again since is left alone).
        """
        if not self._usable(connection):
            result = connection.execute(
                self._delete_core, [{"rid": r, "att": a, "mid": g} for r, a, g in receipts]
            )
            return int(result.rowcount)
        if self._array:
            ids = [r[0] for r in receipts]
            params = (ids, ids, [r[1] for r in receipts], [r[2] for r in receipts])
            return int(connection.exec_driver_sql(self._delete_pg, params).rowcount)
        if self._mysql:
            sql = self._in_lists.get(len(receipts))
            if sql is None:
                marks = ", ".join(["%s"] * len(receipts))
                rows = ", ".join(["(%s, %s, %s)"] * len(receipts))
                # The id list makes it a primary-key range (scanned, so locked, in id
                # order); the row list fences each row on its claim.
                sql = (
                    f"{self._delete_mysql}{marks}) AND (id, attempts, message_id) IN "
                    f"({rows}) ORDER BY id"
                )
                if len(self._in_lists) < 128:
                    self._in_lists[len(receipts)] = sql
            flat = [r[0] for r in receipts] + [v for r in receipts for v in r]
            return int(connection.exec_driver_sql(sql, tuple(flat)).rowcount)
        # SQLite: one writer at a time, and executemany costs no round trips.
        return int(connection.exec_driver_sql(self._delete_one, list(receipts)).rowcount)

"""The two tables of the driver, built for the claim path.

``<prefix>messages`` holds waiting and leased messages, one row each:

- ``id``: an auto-increment key (SQLite's rowid, with ``AUTOINCREMENT`` so that the id of
  a deleted row is never given again); part of a delivery's receipt and the tie-breaker of
  the claim order.
- ``queue`` (at most 255 characters; binary collation on MySQL/MariaDB, so names that
  differ in case are different queues), ``message_id``, ``body`` (the serialized
  envelope, bytes).
- ``attempts``: deliveries so far; incremented by the claim, so ``(id, attempts,
  message_id)`` names one claim and fences every settle (an ack, nack, extension or
  dead-letter only touches the row if nobody claimed it again meanwhile; the message id
  guards against SQLite reusing the id of a deleted top row).
- ``available_at``: when the row may be claimed next (epoch seconds on the database
  server's clock, see :mod:`pashq_database.clock`). A delay, a retry
  back-off *and* a lease are all this one column: a claim sets it to ``now + lease``, so an
  expired lease makes the row claimable again by the very same query, with no sweeper.
- ``lease_expires_at``: set by the claim, cleared by a nack; only for ``stats`` (tells
  in-flight rows from delayed ones).
- ``created_at``.

The claim is ``WHERE queue = :q AND available_at <= :now ORDER BY available_at, id LIMIT
:n`` and one index, ``(queue, available_at, id)``, serves it exactly: a range scan that
starts at the oldest ready row of the queue and stops after ``n`` rows, never touching
leased or delayed rows (their ``available_at`` lies in the future) nor other queues. There
is no status column: a status would need either a second index or a filter that scans
past leased rows.

``<prefix>dead_letters`` keeps failed messages with the reason, traceback, attempts and
``failed_at``, indexed by ``(queue, id)`` for listing and by ``message_id`` for retry.

``<prefix>coordination`` holds unique keys, concurrency places and rate-limit windows
(:mod:`pashq_database.coordination`); only the coordination hooks need it.
"""

from __future__ import annotations

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from pashq_database.coordination import coordination_table

__all__ = ["QUEUE_LENGTH", "Schema"]

_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# BLOB is 64 KiB on MySQL/MariaDB; LONGBLOB matches bytea and SQLite's BLOB.
_BODY = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
#: Longest queue name (characters) the tables hold.
QUEUE_LENGTH = 255
# MySQL/MariaDB's default collations compare case-insensitively: 'Jobs' would read the rows
# of 'jobs'. A binary collation keeps queue names apart, as PostgreSQL and SQLite do.
_QUEUE = sa.String(QUEUE_LENGTH).with_variant(
    mysql.VARCHAR(QUEUE_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)


@attrs.frozen
class Schema:
    """The tables for one ``table_prefix``.

    :ivar prefix: the table prefix.
    :ivar metadata: the metadata holding both tables.
    :ivar messages: the messages table.
    :ivar dead_letters: the dead letters table.
    :ivar coordination: the coordination table (holds and windows).
    """

    prefix: str
    metadata: sa.MetaData
    messages: sa.Table
    dead_letters: sa.Table
    coordination: sa.Table

    @classmethod
    def build(cls, prefix: str) -> Schema:
        """Return the tables ``<prefix>messages``, ``<prefix>dead_letters`` and
        ``<prefix>coordination``."""
        metadata = sa.MetaData()
        messages = sa.Table(
            f"{prefix}messages",
            metadata,
            sa.Column("id", _KEY, primary_key=True, autoincrement=True),
            sa.Column("queue", _QUEUE, nullable=False),
            sa.Column("message_id", sa.String(64), nullable=False),
            sa.Column("body", _BODY, nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False, default=0),
            sa.Column("available_at", sa.Double, nullable=False),
            sa.Column("lease_expires_at", sa.Double, nullable=True),
            sa.Column("created_at", sa.Double, nullable=False),
            sa.Index(f"{prefix}messages_claim", "queue", "available_at", "id"),
            sqlite_autoincrement=True,
            mysql_charset="utf8mb4",
        )
        dead_letters = sa.Table(
            f"{prefix}dead_letters",
            metadata,
            sa.Column("id", _KEY, primary_key=True, autoincrement=True),
            sa.Column("queue", _QUEUE, nullable=False),
            sa.Column("message_id", sa.String(64), nullable=False),
            sa.Column("body", _BODY, nullable=False),
            sa.Column("reason", _TEXT, nullable=False),
            sa.Column("traceback", _TEXT, nullable=True),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("failed_at", sa.Double, nullable=False),
            sa.Index(f"{prefix}dead_letters_queue", "queue", "id"),
            sa.Index(f"{prefix}dead_letters_message", "message_id"),
            mysql_charset="utf8mb4",  # any reason or traceback, whatever the server default
        )
        coordination = coordination_table(metadata, prefix)
        return cls(prefix, metadata, messages, dead_letters, coordination)

    @property
    def tables(self) -> tuple[sa.Table, ...]:
        """Every table, in creation order."""
        return (self.messages, self.dead_letters, self.coordination)

    @property
    def queue_tables(self) -> tuple[sa.Table, sa.Table]:
        """The tables every queue needs (the coordination table is checked on first use)."""
        return (self.messages, self.dead_letters)

    def ddl(self, dialect: sa.Dialect) -> list[str]:
        """Return the ``CREATE TABLE`` / ``CREATE INDEX`` statements for ``dialect``."""
        statements: list[str] = []
        for table in self.tables:
            statements.append(str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip())
            for index in sorted(table.indexes, key=lambda i: str(i.name)):
                statements.append(
                    str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip()
                )
        return statements

    def missing(self, connection: sa.Connection, queues_only: bool = False) -> list[str]:
        """Return the names of the tables that do not exist on ``connection`` (with
        ``queues_only``, of :attr:`queue_tables`)."""
        inspector = sa.inspect(connection)
        tables = self.queue_tables if queues_only else self.tables
        return [t.name for t in tables if not inspector.has_table(t.name)]

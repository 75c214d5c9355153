"""Bring tables made by an older pashq-database up to the current schema.

pashq-database 0.1 made the tables without the ``priority`` columns and with the claim
index ``(queue, available_at, id)``. :func:`outdated` lists what such tables lack;
each :class:`Step` holds the DDL that adds it, in this order (each step is
checked on its own, so a run that stopped halfway is finished by the next one):

1. ``ALTER TABLE <prefix>messages ADD COLUMN priority INTEGER DEFAULT 0 NOT NULL`` (every
   waiting message gets priority 0; PostgreSQL >= 11, MariaDB >= 10.3 and MySQL 8 add a
   column with a constant default without rewriting the table);
2. the same on ``<prefix>dead_letters``;
3. ``DROP INDEX <prefix>messages_claim`` and ``CREATE INDEX <prefix>messages_claim ON
   <prefix>messages (queue, priority DESC, available_at, id)`` (this one reads the whole
   table: on a large backlog it takes a while and, except on PostgreSQL, blocks writes).

The driver runs them when ``create_tables`` is on (the SQLite default) or on
``pashq database create``; otherwise it refuses to start with
:class:`OutdatedTablesError`, which names the tables and those commands.
``pashq database migration --upgrade`` writes the same steps as an Alembic revision.
"""

from __future__ import annotations

import attrs
import sqlalchemy as sa

from pashq.errors import DriverError
from pashq_database.schema import CLAIM_COLUMNS, CLAIM_INDEX, Schema

__all__ = ["OutdatedTablesError", "Step", "describe", "outdated"]


class OutdatedTablesError(DriverError):
    """The tables were made by an older pashq-database and lack a column or index."""


@attrs.frozen
class Step:
    """One missing piece of the schema.

    :ivar table: the table it belongs to.
    :ivar what: what is missing, for messages (``"column priority"``).
    :ivar statements: the DDL that adds it.
    """

    table: str
    what: str
    statements: tuple[sa.schema.ExecutableDDLElement | sa.TextClause, ...]


def _add_priority(table: sa.Table, dialect: sa.Dialect) -> sa.TextClause:
    name = dialect.identifier_preparer.format_table(table)
    return sa.text(f"ALTER TABLE {name} ADD COLUMN priority INTEGER DEFAULT 0 NOT NULL")


def outdated(schema: Schema, connection: sa.Connection) -> list[Step]:
    """Return what the existing tables of ``schema`` lack (nothing for missing tables)."""
    inspector = sa.inspect(connection)
    dialect = connection.dialect
    steps: list[Step] = []
    for table in schema.queue_tables:  # the coordination table has no priority
        if not inspector.has_table(table.name):
            continue
        columns = {c["name"] for c in inspector.get_columns(table.name)}
        if "priority" not in columns:
            steps.append(Step(table.name, "column priority", (_add_priority(table, dialect),)))
    m = schema.messages
    if inspector.has_table(m.name):
        claim = CLAIM_INDEX.format(prefix=schema.prefix)
        found = {i["name"]: list(i["column_names"]) for i in inspector.get_indexes(m.name)}
        if found.get(claim) != CLAIM_COLUMNS:
            index = next(i for i in m.indexes if i.name == claim)
            drop = (sa.schema.DropIndex(index),) if claim in found else ()
            steps.append(
                Step(
                    m.name,
                    f"index {claim} on ({', '.join(CLAIM_COLUMNS)})",
                    (*drop, sa.schema.CreateIndex(index)),
                )
            )
    return steps


def describe(steps: list[Step]) -> str:
    """One line naming what is missing where: ``pashq_messages: column priority, ...``."""
    by_table: dict[str, list[str]] = {}
    for step in steps:
        by_table.setdefault(step.table, []).append(step.what)
    return "; ".join(f"{table}: {', '.join(whats)}" for table, whats in by_table.items())

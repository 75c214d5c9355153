"""The database server's clock, as epoch seconds in SQL.

Leases, delays and ready times are compared on the server's clock, never on a worker's:
workers on many hosts then agree on which lease is live without synchronized clocks, and
a worker whose clock runs ahead cannot take rows that another worker still holds.

:func:`now_sql` gives the expression as SQL text (for the driver-level statements of
:mod:`pashq_database.statements`), :class:`db_now` as a SQLAlchemy Core expression. Both
are constant within one statement (PostgreSQL's ``statement_timestamp()``, MySQL's query
start time, SQLite's ``'now'`` within one step), so ``available_at <= <now>`` is still a
range on the claim index.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["db_now", "now_sql"]

_NOW = {
    # date_part returns float8 (EXTRACT returns numeric since PostgreSQL 14).
    "postgresql": "date_part('epoch', statement_timestamp())",
    # UNIX_TIMESTAMP() is UTC whatever the session time_zone; NOW(6) gives the microseconds
    # of the same instant (both are the statement's start).
    "mysql": "(UNIX_TIMESTAMP() + MICROSECOND(NOW(6)) / 1e6)",
    "mariadb": "(UNIX_TIMESTAMP() + MICROSECOND(NOW(6)) / 1e6)",
    # Julian day 2440587.5 is 1970-01-01T00:00Z; 'now' has millisecond resolution.
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}


def now_sql(dialect_name: str) -> str:
    """The SQL of the server's current time in epoch seconds (a double) for a dialect.

    :raises ValueError: a dialect the driver does not support.
    """
    try:
        return _NOW[dialect_name]
    except KeyError:
        raise ValueError(
            f"the database driver supports PostgreSQL, MySQL/MariaDB and SQLite, "
            f"not {dialect_name!r}"
        ) from None


class db_now(FunctionElement[float]):
    """The server's current time in epoch seconds, as a Core expression."""

    type = sa.Double()
    inherit_cache = True


@compiles(db_now)
def _compile_db_now(element: db_now, compiler: Any, **kw: Any) -> str:
    return now_sql(compiler.dialect.name)

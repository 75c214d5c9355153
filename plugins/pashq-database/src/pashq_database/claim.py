"""The claim: take up to ``n`` ready rows of a queue and lease them, in one transaction.

Ready rows go highest ``priority`` first, then by ``available_at`` and ``id`` (the order
of the claim index, :func:`pashq_database.schema.claim_index`).

- PostgreSQL and SQLite: one ``UPDATE ... WHERE id IN (SELECT ... LIMIT n [FOR UPDATE SKIP
  LOCKED]) RETURNING ...``. On SQLite the transaction is ``BEGIN IMMEDIATE`` (one writer at a
  time, so no row is claimed twice); on PostgreSQL ``SKIP LOCKED`` lets concurrent claims
  pass each other instead of queueing on the same rows.
- MySQL / MariaDB (no ``UPDATE ... RETURNING``): ``SELECT ... FOR UPDATE SKIP LOCKED`` then
  ``UPDATE ... WHERE id IN (...)`` in the same transaction, under READ COMMITTED so InnoDB
  takes no gap locks that would block concurrent inserts.

The claim increments ``attempts`` and sets ``available_at`` (and ``lease_expires_at``) to
the end of the lease. "Ready" and "the end of the lease" are on the database server's clock
(:mod:`pashq_database.clock`), so a worker with a wrong clock can neither take a live
lease nor hold one longer than ``lease`` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from pashq_database.clock import db_now, now_sql
from pashq_database.schema import Schema

__all__ = ["Claim", "ClaimedRow"]

#: (row id, message id, body, attempts, priority)
ClaimedRow = tuple[int, str, bytes, int, int]


class Claim:
    """Prebuilt claim statements for one schema and dialect."""

    def __init__(self, schema: Schema, dialect: sa.Dialect) -> None:
        """Build the statements once; SQLAlchemy caches their compiled form."""
        m = schema.messages
        now = db_now()
        self.returning = dialect.name in ("postgresql", "sqlite")
        ready = (
            sa.select(m.c.id)
            .where(m.c.queue == sa.bindparam("b_queue"), m.c.available_at <= now)
            .order_by(m.c.priority.desc(), m.c.available_at, m.c.id)
            .limit(sa.bindparam("b_limit", type_=sa.Integer))
        )
        until = now + sa.bindparam("b_lease", type_=sa.Double)
        lease = {"attempts": m.c.attempts + 1, "available_at": until, "lease_expires_at": until}
        if dialect.name == "postgresql":
            # ``id = ANY(ARRAY(subquery))`` runs the locking subquery once and fetches the
            # rows by primary key; ``id IN (subquery)`` lets the planner pick a hash semi
            # join over a sequential scan of the whole table, O(backlog) per claim.
            table = dialect.identifier_preparer.format_table(m)
            clock = now_sql(dialect.name)
            self._update_returning: sa.Executable = sa.text(
                f"UPDATE {table} SET attempts = attempts + 1, available_at = {clock} + "
                f":b_lease, lease_expires_at = {clock} + :b_lease WHERE id = ANY(ARRAY("
                f"SELECT id FROM {table} WHERE queue = :b_queue AND available_at <= {clock} "
                "ORDER BY priority DESC, available_at, id LIMIT :b_limit FOR UPDATE SKIP "
                "LOCKED)) RETURNING id, message_id, body, attempts, priority"
            ).bindparams(
                sa.bindparam("b_lease", type_=sa.Double),
                sa.bindparam("b_queue", type_=sa.String),
                sa.bindparam("b_limit", type_=sa.Integer),
            )
        elif self.returning:
            self._update_returning = (
                sa.update(m)
                .where(m.c.id.in_(ready.scalar_subquery()))
                .values(lease)
                .returning(m.c.id, m.c.message_id, m.c.body, m.c.attempts, m.c.priority)
            )
        else:
            # MySQL cannot LIMIT inside IN (subquery): select the locked rows directly.
            self._select = (
                sa.select(m.c.id, m.c.message_id, m.c.body, m.c.attempts, m.c.priority)
                .where(m.c.queue == sa.bindparam("b_queue"), m.c.available_at <= now)
                .order_by(m.c.priority.desc(), m.c.available_at, m.c.id)
                .limit(sa.bindparam("b_limit", type_=sa.Integer))
                .with_for_update(skip_locked=True)
            )
            self._update = (
                sa.update(m).where(m.c.id.in_(sa.bindparam("ids", expanding=True))).values(lease)
            )

    def run(
        self, connection: sa.Connection, queue: str, limit: int, lease: float
    ) -> list[ClaimedRow]:
        """Claim up to ``limit`` rows of ``queue`` for ``lease`` seconds (server clock),
        inside the caller's open transaction.

        :returns: the claimed rows in claim order, ``attempts`` already counting this one.
        """
        params: dict[str, Any] = {"b_queue": queue, "b_limit": limit, "b_lease": lease}
        if self.returning:
            rows: Sequence[Any] = connection.execute(self._update_returning, params).all()
            # RETURNING keeps no order: highest priority first, then row id (which follows
            # available_at except for delayed and retried rows).
            claimed = [(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows]
            claimed.sort(key=lambda r: (-r[4], r[0]))
            return claimed
        rows = connection.execute(self._select, params).all()
        if not rows:
            return []
        connection.execute(self._update, {"ids": [r[0] for r in rows], "b_lease": lease})
        return [(r[0], r[1], bytes(r[2]), r[3] + 1, r[4]) for r in rows]

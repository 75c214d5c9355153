"""The statements behind ``pashq move``: claim waiting rows with their due time, insert
moved rows with their attempts, keep moved dead letters (skipping ids already kept).

- The claim of waiting rows takes every row that is not leased (ready, delayed or waiting
  out a retry back-off), in ``available_at, id`` order, locked ``FOR UPDATE SKIP LOCKED``
  on PostgreSQL and MySQL/MariaDB (``BEGIN IMMEDIATE`` on SQLite). It leases them as the
  worker's claim does, except that ``available_at`` never moves earlier: a row claimed by
  a move that dies comes back at the later of its due time and the end of the lease.
- Moved rows are inserted with ``attempts`` set, so their next claim counts one more.
- Moved dead letters keep ``failed_at`` (when known) and are skipped when a dead letter
  with the same ``message_id`` is already kept for the queue (the ``message_id`` index).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from pashq.delivery import DeadLetter, MovedMessage
from pashq.text import REASON_LIMIT, TRACEBACK_LIMIT, safe_text
from pashq_database.clock import db_now
from pashq_database.schema import Schema

__all__ = ["MoveStatements", "WaitingRow"]

#: (row id, message id, body, attempts including this claim, seconds until due)
WaitingRow = tuple[int, str, bytes, int, float]

_IN_CHUNK = 1000


def _epoch(when: datetime | None) -> float | None:
    """Epoch seconds of a dead letter's ``failed_at`` (naive means UTC), or ``None``."""
    if when is None:
        return None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()


class MoveStatements:
    """Prebuilt statements of ``pashq move`` for one schema and dialect."""

    def __init__(self, schema: Schema, dialect: sa.Dialect) -> None:
        """Build the statements once; SQLAlchemy caches their compiled form."""
        m, dl = schema.messages, schema.dead_letters
        self.messages, self.dead_letters = m, dl
        now = db_now()
        not_leased = sa.or_(m.c.lease_expires_at.is_(None), m.c.lease_expires_at <= now)
        select = (
            sa.select(m.c.id, m.c.message_id, m.c.body, m.c.attempts, m.c.available_at - now)
            .where(m.c.queue == sa.bindparam("b_queue"), not_leased)
            .order_by(m.c.available_at, m.c.id)
            .limit(sa.bindparam("b_limit", type_=sa.Integer))
        )
        if dialect.name != "sqlite":
            select = select.with_for_update(skip_locked=True)
        self._select = select
        until = now + sa.bindparam("b_lease", type_=sa.Double)
        self._lease = (
            sa.update(m)
            .where(m.c.id.in_(sa.bindparam("ids", expanding=True)))
            .values(
                attempts=m.c.attempts + 1,
                available_at=sa.case((m.c.available_at > until, m.c.available_at), else_=until),
                lease_expires_at=until,
            )
        )
        self._insert = sa.insert(m).values(
            available_at=db_now() + sa.bindparam("delay", type_=sa.Double),
            lease_expires_at=None,
            created_at=db_now(),
        )
        self._known_dead = sa.select(dl.c.message_id).where(
            dl.c.queue == sa.bindparam("b_queue"),
            dl.c.message_id.in_(sa.bindparam("ids", expanding=True)),
        )
        self._insert_dead = sa.insert(dl)

    def claim(
        self, connection: sa.Connection, queue: str, limit: int, lease: float
    ) -> list[WaitingRow]:
        """Lease up to ``limit`` rows of ``queue`` that no one holds, due or not, inside the
        caller's transaction; return them in claim order."""
        rows = connection.execute(self._select, {"b_queue": queue, "b_limit": limit}).all()
        if not rows:
            return []
        ids = sorted(r[0] for r in rows)  # lock order of every multi-row statement
        connection.execute(self._lease, {"ids": ids, "b_lease": lease})
        return [(r[0], r[1], bytes(r[2]), r[3] + 1, max(0.0, float(r[4]))) for r in rows]

    def insert(
        self, connection: sa.Connection, queue: str, messages: Sequence[MovedMessage]
    ) -> None:
        """Insert moved messages with their attempts and the time left until due."""
        connection.execute(
            self._insert,
            [
                {
                    "queue": queue,
                    "message_id": moved.message.id,
                    "body": moved.message.body,
                    "attempts": max(0, moved.attempts),
                    "delay": max(0.0, moved.message.delay),
                }
                for moved in messages
            ],
        )

    def store_dead(
        self, connection: sa.Connection, queue: str, dead_letters: Sequence[DeadLetter]
    ) -> int:
        """Insert the dead letters whose id the queue does not keep yet; return how many."""
        known: set[str] = set()
        ids = sorted({d.id for d in dead_letters})
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            known.update(
                connection.execute(self._known_dead, {"b_queue": queue, "ids": chunk}).scalars()
            )
        rows: list[dict[str, Any]] = []
        for dead in dead_letters:
            if dead.id in known:
                continue
            known.add(dead.id)
            rows.append(
                {
                    "queue": queue,
                    "message_id": dead.id,
                    "body": dead.body,
                    "reason": safe_text(dead.reason, REASON_LIMIT),
                    "traceback": (
                        None
                        if dead.traceback is None
                        else safe_text(dead.traceback, TRACEBACK_LIMIT, keep="tail")
                    ),
                    "attempts": dead.attempts,
                    "failed_at": _epoch(dead.failed_at),
                }
            )
        if not rows:
            return 0
        now = connection.execute(sa.select(db_now())).scalar_one()
        for row in rows:
            if row["failed_at"] is None:
                row["failed_at"] = now
        connection.execute(self._insert_dead, rows)
        return len(rows)

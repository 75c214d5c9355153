"""The coordination store in SQL: holds and sliding windows in one table, and defer.

``<prefix>coordination`` has one row per place held on a key:

- ``key`` (at most 210 characters: ``lock:`` or ``window:`` and the caller's key of at
  most 200; binary collation on MySQL/MariaDB, so keys are compared exactly),
- ``slot`` (0 to ``limit - 1``; primary key ``(key, slot)``),
- ``owner`` (the holder's token, at most 64 characters),
- ``expires_at`` (epoch seconds on the database server's clock,
  :mod:`pashq_database.clock`).

An acquire locks the key's rows (``SELECT ... FOR UPDATE`` on PostgreSQL and
MySQL/MariaDB; SQLite's ``BEGIN IMMEDIATE`` serializes every writer), then refreshes the
owner's own live row, reuses an expired slot, inserts the lowest free slot below
``limit``, or refuses. Two transactions that both insert into a key nobody held yet meet
on the primary key: one fails with an integrity error (or a deadlock on MySQL) and runs
again, now seeing the other's row, so at most ``limit`` live rows ever exist per key.

A sliding window is the same thing with ``ttl = period`` and a fresh owner per event:
the rows are the times of the last ``limit`` counted events, each live for ``period``
seconds after it was counted, so the live rows at any instant are exactly the events of
the last ``period`` seconds, never more than ``limit``.

A unique dispatch (``pashq_push_unique``) takes its keys and inserts its messages in one
transaction; on PostgreSQL with psycopg all its keys are one ``INSERT ... SELECT FROM
unnest(...) ON CONFLICT DO UPDATE ... WHERE <expired> RETURNING`` (a concurrent insert of
a key waits for that transaction and then sees its row), elsewhere one locking ``SELECT
... IN``, one batched ``UPDATE`` and one batched ``INSERT``.

Rows whose hold ended are reused in place or deleted by release; an occasional sweep
(one in :data:`_SWEEP_EVERY` acquires) deletes rows that expired an hour ago.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from pashq.coordination import Acquired
from pashq.delivery import Delivery, OutgoingMessage
from pashq.errors import DriverError, QueueNotFoundError
from pashq.hookspecs import hookimpl
from pashq_database.clock import db_now, now_sql

if TYPE_CHECKING:
    from pashq_database.driver import DatabaseDriver

__all__ = ["COORDINATION_KEY_LENGTH", "CoordinationHooks", "coordination_table"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Longest stored key: a kind prefix (``window:``) and a caller's key of 200 characters.
COORDINATION_KEY_LENGTH = 210
_KEY = sa.String(COORDINATION_KEY_LENGTH).with_variant(
    mysql.VARCHAR(COORDINATION_KEY_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"),
    "mysql",
    "mariadb",
)
#: An acquire that lost an insert race (or a MySQL deadlock) runs again, at most this often.
_RACE_RETRIES = 50
#: One acquire in this many also deletes rows that expired more than an hour ago.
_SWEEP_EVERY = 1000
_SWEEP_AGE = 3600.0
_MIN_WAIT = 0.001
_RETRYABLE_CODES = {1213, 1205, 1062}  # MySQL deadlock, lock wait timeout, duplicate key
_RETRYABLE_STATES = {"40P01", "40001", "23505"}  # PostgreSQL deadlock, serialization, unique


def coordination_table(metadata: sa.MetaData, prefix: str) -> sa.Table:
    """Define ``<prefix>coordination`` on ``metadata`` (see the module docstring)."""
    return sa.Table(
        f"{prefix}coordination",
        metadata,
        sa.Column("key", _KEY, primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        mysql_charset="utf8mb4",
    )


def _retryable(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, DriverError) else exc
    if isinstance(cause, sa.exc.IntegrityError):
        return True
    orig = getattr(cause, "orig", None)
    if getattr(orig, "sqlstate", None) in _RETRYABLE_STATES:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _RETRYABLE_CODES


class _Statements:
    """The coordination statements for one table."""

    def __init__(self, table: sa.Table, dialect: sa.Dialect) -> None:
        locking = dialect.name != "sqlite"
        c = table.c
        now = db_now()
        ttl = sa.bindparam("ttl", type_=sa.Double)
        self.table = table
        select = sa.select(c.slot, c.owner, c.expires_at - now).where(c.key == sa.bindparam("key_"))
        self.rows = select.order_by(c.slot).with_for_update() if locking else select
        #: psycopg 3 on PostgreSQL: one array parameter instead of one per key, and a batch
        #: of new rows as one INSERT ... SELECT FROM unnest (executemany pays per row).
        self.arrays = dialect.name == "postgresql" and dialect.driver == "psycopg"
        if self.arrays:
            keys = sa.bindparam("keys_", type_=postgresql.ARRAY(sa.Text))
            many = sa.select(c.key, c.slot, c.owner, c.expires_at - now).where(
                c.key == sa.any_(keys)
            )
            name = dialect.identifier_preparer.format_table(table)
            clock = now_sql(dialect.name)
            # Take every free (or expired) slot 0 in one statement; the keys it returns
            # were taken. A concurrent insert of the same key makes it wait for that
            # transaction and then see its row (no unique violation). Rows are taken in
            # key order, so two batches never lock in opposite orders.
            self.upsert_arrays = sa.text(
                f'INSERT INTO {name} AS c ("key", slot, owner, expires_at) '
                f"SELECT k, 0, o, {clock} + t "
                "FROM unnest(CAST(:k AS text[]), CAST(:o AS text[]), CAST(:t AS float8[])) "
                'AS x(k, o, t) ORDER BY k ON CONFLICT ("key", slot) DO UPDATE SET '
                "owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at "
                f'WHERE c.expires_at <= {clock} RETURNING c."key"'
            )
        else:
            many = sa.select(c.key, c.slot, c.owner, c.expires_at - now).where(
                c.key.in_(sa.bindparam("keys_", expanding=True))
            )
        # Locked in key order, like every multi-row statement of the driver.
        self.many = many.order_by(c.key, c.slot).with_for_update() if locking else many
        self.take = (
            sa.update(table)
            .where(c.key == sa.bindparam("key_"), c.slot == sa.bindparam("slot_"))
            .values(owner=sa.bindparam("owner_"), expires_at=now + ttl)
        )
        self.insert = sa.insert(table).values(
            key=sa.bindparam("key_"),
            slot=sa.bindparam("slot_"),
            owner=sa.bindparam("owner_"),
            expires_at=now + ttl,
        )
        mine = (c.key == sa.bindparam("key_"), c.owner == sa.bindparam("owner_"))
        self.release = sa.delete(table).where(*mine, c.expires_at > now)
        self.release_any = sa.delete(table).where(*mine)
        self.extend = sa.update(table).where(*mine, c.expires_at > now).values(expires_at=now + ttl)
        self.sweep = sa.delete(table).where(
            c.expires_at < now - sa.bindparam("age", type_=sa.Double)
        )


class CoordinationHooks:
    """The coordination and defer hooks of :class:`~pashq_database.DatabaseDriver`."""

    _coordination_ready = False
    _acquires = itertools.count()

    # -- set-up ------------------------------------------------------------------------------

    def _coordination(self: DatabaseDriver) -> _Statements:  # type: ignore[misc]
        statements: _Statements | None = getattr(self, "_coordination_statements", None)
        if statements is None:
            table = self.schema.coordination
            statements = _Statements(table, self.engine.dialect)
            self._coordination_statements = statements
        if not self._coordination_ready:
            self._check_coordination_table()
        return statements

    def _check_coordination_table(self: DatabaseDriver) -> None:  # type: ignore[misc]
        table = self.schema.coordination

        def exists(conn: sa.Connection) -> bool:
            return bool(sa.inspect(conn).has_table(table.name))

        if not self._transact("checking the coordination table", None, exists):
            if not self._create_tables:
                raise QueueNotFoundError(
                    f"table {table.name} does not exist in {self.safe_url} (connection "
                    f"{self.connection_name!r}), needed for unique messages, limits and "
                    "schedules: run `pashq database create` (or add it with `pashq database "
                    "migration` if Alembic manages your schema)"
                )
            log.info("creating table %s in %s", table.name, self.safe_url)
            with self._errors("creating the coordination table", None):
                table.create(self.engine, checkfirst=True)
        self._coordination_ready = True

    def _run(  # type: ignore[misc]
        self: DatabaseDriver, what: str, work: Callable[[sa.Connection], T]
    ) -> T:
        """One transaction, run again when it lost a race on the primary key."""
        for attempt in range(_RACE_RETRIES):
            try:
                return self._transact(what, None, work)
            except DriverError as exc:
                if not _retryable(exc) or attempt == _RACE_RETRIES - 1:
                    raise
                time.sleep(0.001 * (attempt + 1))
        raise AssertionError("unreachable")

    # -- the hold, inside a transaction --------------------------------------------------------

    @staticmethod
    def _acquire_in(
        st: _Statements, conn: sa.Connection, key: str, owner: str, ttl: float, limit: int
    ) -> Acquired:
        rows = conn.execute(st.rows, {"key_": key}).all()
        live = [(slot, holder, left) for slot, holder, left in rows if left > 0]
        params = {"key_": key, "owner_": owner, "ttl": ttl}
        for slot, holder, _ in live:
            if holder == owner:
                conn.execute(st.take, {**params, "slot_": slot})
                return Acquired(True, owner)
        if len(live) < limit:
            used = {slot for slot, _, _ in rows}
            for slot, _, left in rows:
                if left <= 0 and slot < limit:
                    conn.execute(st.take, {**params, "slot_": slot})
                    return Acquired(True, owner)
            free = next(s for s in range(limit) if s not in used)
            conn.execute(st.insert, {**params, "slot_": free})
            return Acquired(True, owner)
        _, first, left = min(live, key=lambda row: row[2])
        return Acquired(False, first, max(float(left), _MIN_WAIT))

    @staticmethod
    def _acquire_many(
        st: _Statements, conn: sa.Connection, wanted: Sequence[tuple[str, str, float]]
    ) -> list[Acquired]:
        """Take single-place holds ``(key, owner, ttl)`` in three statements (one locking
        SELECT, one batched UPDATE of expired rows, one batched INSERT); a key wanted twice
        is held by its first owner."""
        if st.arrays:
            return CoordinationHooks._acquire_many_arrays(st, conn, wanted)
        rows: dict[str, list[tuple[int, str, float]]] = {}
        keys = sorted({key for key, _, _ in wanted})
        for chunk in range(0, len(keys), 500):
            for key, slot, holder, left in conn.execute(
                st.many, {"keys_": keys[chunk : chunk + 500]}
            ):
                rows.setdefault(key, []).append((slot, holder, float(left)))
        answers: list[Acquired] = []
        taken: dict[str, str] = {}
        updates: list[dict[str, Any]] = []
        inserts: list[dict[str, Any]] = []
        for key, owner, ttl in wanted:
            if key in taken:
                holder = taken[key]
                answers.append(Acquired(holder == owner, holder, 0.0 if holder == owner else ttl))
                continue
            found = rows.get(key, [])
            live = [(slot, holder, left) for slot, holder, left in found if left > 0]
            params = {"key_": key, "owner_": owner, "ttl": ttl}
            mine = [slot for slot, holder, _ in live if holder == owner]
            if mine:
                updates.append({**params, "slot_": mine[0]})
            elif live:
                _, first, left = min(live, key=lambda row: row[2])
                answers.append(Acquired(False, first, max(left, _MIN_WAIT)))
                continue
            elif any(slot == 0 for slot, _, _ in found):
                updates.append({**params, "slot_": 0})
            else:
                inserts.append({**params, "slot_": 0})
            taken[key] = owner
            answers.append(Acquired(True, owner))
        if updates:
            conn.execute(st.take, updates)
        if inserts:
            conn.execute(st.insert, inserts)
        return answers

    @staticmethod
    def _acquire_many_arrays(
        st: _Statements, conn: sa.Connection, wanted: Sequence[tuple[str, str, float]]
    ) -> list[Acquired]:
        """:meth:`_acquire_many` on PostgreSQL: one upsert for the batch, then one SELECT
        of the holders of the keys it could not take (none, usually)."""
        first: dict[str, str] = {}
        ttl_of: dict[str, float] = {}
        for key, owner, ttl in wanted:
            if key not in first:
                first[key], ttl_of[key] = owner, ttl
        keys = list(first)
        params = {"k": keys, "o": [first[k] for k in keys], "t": [ttl_of[k] for k in keys]}
        taken = set(conn.execute(st.upsert_arrays, params).scalars())
        held: dict[str, tuple[str, float]] = {}
        refused = [k for k in keys if k not in taken]
        if refused:
            for key, _slot, holder, left in conn.execute(st.many, {"keys_": refused}):
                if left > 0 and (key not in held or left < held[key][1]):
                    held[key] = (holder, float(left))
            for key in refused:
                if key not in held:  # expired since the upsert looked: take it the slow way
                    got = CoordinationHooks._acquire_in(st, conn, key, first[key], ttl_of[key], 1)
                    if got.taken:
                        taken.add(key)
                    else:
                        held[key] = (got.holder or "", got.wait)
        answers = []
        for key, owner, _ in wanted:
            if key in taken:
                holder = first[key]
                answers.append(Acquired(holder == owner, holder, 0.0 if holder == owner else 1.0))
            else:
                holder, left = held.get(key, ("", _MIN_WAIT))
                answers.append(Acquired(False, holder, max(left, _MIN_WAIT)))
        return answers

    def _sweep_due(self: DatabaseDriver, st: _Statements, conn: sa.Connection) -> None:  # type: ignore[misc]
        if next(CoordinationHooks._acquires) % _SWEEP_EVERY == _SWEEP_EVERY - 1:
            conn.execute(st.sweep, {"age": _SWEEP_AGE})

    # -- hooks ---------------------------------------------------------------------------------

    @hookimpl
    def pashq_lock_acquire(  # type: ignore[misc]
        self: DatabaseDriver, key: str, owner: str, ttl: float, limit: int
    ) -> Acquired:
        """Take one of ``limit`` places on ``key`` (rows locked; races run again)."""
        st = self._coordination()

        def work(conn: sa.Connection) -> Acquired:
            got = CoordinationHooks._acquire_in(st, conn, f"lock:{key}", owner, ttl, limit)
            self._sweep_due(st, conn)
            return got

        return self._run("acquiring a coordination key", work)

    @hookimpl
    def pashq_lock_release(self: DatabaseDriver, key: str, owner: str) -> bool:  # type: ignore[misc]
        """Delete ``owner``'s row on ``key`` (expired ones too); whether it was live."""
        st = self._coordination()
        params = {"key_": f"lock:{key}", "owner_": owner}

        def work(conn: sa.Connection) -> bool:
            live = conn.execute(st.release, params).rowcount
            conn.execute(st.release_any, params)
            return bool(live)

        return self._run("releasing a coordination key", work)

    @hookimpl
    def pashq_lock_extend(  # type: ignore[misc]
        self: DatabaseDriver, key: str, owner: str, ttl: float
    ) -> bool:
        """Move the end of ``owner``'s live row on ``key`` to the server's now + ``ttl``."""
        st = self._coordination()
        params = {"key_": f"lock:{key}", "owner_": owner, "ttl": ttl}
        return self._run(
            "extending a coordination key",
            lambda conn: bool(conn.execute(st.extend, params).rowcount),
        )

    @hookimpl
    def pashq_window_add(  # type: ignore[misc]
        self: DatabaseDriver, key: str, limit: int, period: float
    ) -> float:
        """Count one event unless ``limit`` rows of the window are live."""
        st = self._coordination()
        owner = uuid.uuid4().hex
        work = functools.partial(
            CoordinationHooks._acquire_in,
            st,
            key=f"window:{key}",
            owner=owner,
            ttl=period,
            limit=limit,
        )
        got: Acquired = self._run("counting a rate-limit event", lambda conn: work(conn=conn))
        return 0.0 if got.taken else got.wait

    @hookimpl
    def pashq_push_unique(  # type: ignore[misc]
        self: DatabaseDriver,
        queue: str,
        messages: Sequence[OutgoingMessage],
        keys: Sequence[str | None],
        ttls: Sequence[float],
        options: Mapping[str, Any],
    ) -> list[str]:
        """Take the keys and insert the messages whose key was free, in one transaction
        (the caller's with ``transaction=``)."""
        st = self._coordination()
        unknown = set(options) - {"transaction"}
        if unknown:
            raise TypeError(
                f"database driver: unknown dispatch option(s) {', '.join(sorted(unknown))}; "
                "it accepts transaction=<SQLAlchemy Connection or Session>"
            )
        if not self._tables_ok.is_set():
            self.check_tables(queue)
        for m in messages:
            if len(m.body) > self._max_body:
                raise self._too_large(queue, m, self._max_body)

        wanted = [
            (f"lock:{key}", m.id, ttl)
            for m, key, ttl in zip(messages, keys, ttls, strict=True)
            if key is not None
        ]

        def work(conn: sa.Connection) -> list[str]:
            if len(wanted) == 1 and not st.arrays:  # one dispatch(): no IN list
                holds = iter([CoordinationHooks._acquire_in(st, conn, *wanted[0], 1)])
            else:
                holds = iter(CoordinationHooks._acquire_many(st, conn, wanted))
            answers: list[str] = []
            rows: list[tuple[Any, ...]] = []
            for m, key in zip(messages, keys, strict=True):
                if key is not None:
                    got = next(holds)
                    if not got.taken:
                        answers.append(got.holder or "")
                        continue
                answers.append(m.id)
                rows.append(
                    (queue, m.id, m.body, float(m.delay) if m.delay > 0 else 0.0, m.priority)
                )
            if rows:
                self._write(conn, queue, rows, self._notify)
            return answers

        transaction = options.get("transaction")
        if transaction is not None:
            with self._errors("unique push", queue):
                answers = work(self._caller_connection(transaction))
        else:
            answers = self._run(f"unique push on queue {queue!r}", work)
        self._poke()
        return answers

    @hookimpl
    def pashq_defer(  # type: ignore[misc]
        self: DatabaseDriver, queue: str, deliveries: Sequence[Delivery], delay: float
    ) -> None:
        """Make the rows claimable after ``delay`` and take back this claim's attempt."""
        if not deliveries:
            return
        m = self.schema.messages
        stmt = (
            sa.update(m)
            .where(
                m.c.id == sa.bindparam("rid"),
                m.c.attempts == sa.bindparam("att"),
                m.c.message_id == sa.bindparam("mid"),
            )
            .values(
                available_at=db_now() + sa.bindparam("seconds", type_=sa.Double),
                lease_expires_at=None,
                attempts=m.c.attempts - 1,
            )
        )
        params = self._fenced(deliveries, max(delay, 0.0))
        self._transact("defer", queue, lambda conn: conn.execute(stmt, params))
        self._poke()

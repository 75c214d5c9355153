"""``database``: messages in a SQL table, through SQLAlchemy 2 Core.

Backends: SQLite (the default, ``sqlite:///pashq.sqlite3``; WAL, several worker processes
may share the file), PostgreSQL (psycopg 3) and MySQL 8 / MariaDB >= 10.6 (PyMySQL).

Features: persistent at-least-once delivery with a lease (a message whose worker dies comes
back after ``lease`` seconds, no sweeper needed), lease extension, delays and retry
back-off through ``available_at`` (nothing is held in worker memory), dead letters with the
reason and traceback (list / retry / purge), stats, purge, transactional dispatch
(outbox), priorities (``dispatch(priority=0..9)``: the claim takes the highest priority
first, then the oldest; a retry or a retried dead letter keeps its priority),
LISTEN/NOTIFY wake-ups on PostgreSQL (every dispatch notifies at commit) and a cheap
change check elsewhere (``PRAGMA data_version`` on SQLite, ``MAX(id)`` on MySQL/MariaDB;
:mod:`pashq_database.watch`); for ``pashq move``, waiting rows are claimed with their due
time and moved rows and dead letters keep their attempts and reasons (see
:mod:`pashq_database.moving`).

Claims take up to ``batch_size`` rows in one transaction (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL and MySQL/MariaDB, ``BEGIN IMMEDIATE`` on SQLite); acks are one batched
``DELETE``; a nack sets ``available_at`` and keeps the attempt count; a dead letter moves
the row in one transaction. See :mod:`pashq_database.schema` for the tables and the index
that serves the claim. On PostgreSQL the claim commits asynchronously
(``synchronous_commit = off`` for that transaction only): a claim lost in a server crash
is like a lease that ended.

Options (``[queues.<name>]`` with ``type = "database"``):

- ``url`` (str, default ``sqlite:///pashq.sqlite3``): the SQLAlchemy URL.
- ``table_prefix`` (str, default ``pashq_``): tables ``<prefix>messages`` and
  ``<prefix>dead_letters``.
- ``lease`` (float, default 30): seconds a pulled message stays reserved.
- ``poll_interval`` (float, default 1): longest pause between claims of an idle worker.
- ``batch_size`` (int, default 500): most rows per claim transaction and per insert.
- ``create_tables`` (bool, default: true on SQLite, false elsewhere): create missing tables
  on first use, and add what tables of an older release lack (the ``priority`` columns,
  :mod:`pashq_database.upgrade`); otherwise a missing table is a
  :class:`~pashq.errors.QueueNotFoundError` and an outdated one an
  :class:`~pashq_database.upgrade.OutdatedTablesError`, both saying to run
  ``pashq database create`` (or ``pashq database migration``).
- ``listen`` (bool, default true): LISTEN/NOTIFY on PostgreSQL with psycopg 3.
- ``engine_options`` (table): passed to :func:`sqlalchemy.create_engine`.

Dispatch option: ``transaction=<sqlalchemy Connection or Session>`` writes the messages in
the caller's transaction, without committing: they exist only if the caller commits.

Guarantees: at-least-once; every settle (ack, nack, extension, dead letter) only applies
while the row still holds the same claim (row id, ``attempts`` and the stored message id):
a settle after the lease ran out and someone else claimed the row is a no-op. Multi-row
statements lock rows in id order. Leases, delays and ready times are on the database
server's clock (:mod:`pashq_database.clock`). Dead-letter text is made storable
(:func:`pashq.text.safe_text`). Safe across ``os.fork``: a child never uses the parent's
pooled connections. A push or settle whose connection broke before COMMIT (a server
restart) waits up to 10 s for the server and runs once more on a fresh connection (the
broken transaction wrote nothing); a connection lost during COMMIT raises
:class:`~pashq.errors.DriverError` saying the outcome is unknown; while the server stays
down hooks raise :class:`~pashq.errors.DriverError` and the worker backs off. Messages
larger than the server accepts (half of MySQL's ``max_allowed_packet``) raise
:class:`~pashq.errors.MessageTooLargeError` before anything is sent.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa

from pashq.capabilities import Capabilities
from pashq.config import parse_options
from pashq.connection import Connection
from pashq.delivery import (
    DeadLetter,
    Delivery,
    MovedMessage,
    OutgoingMessage,
    QueueStats,
    WaitingDelivery,
)
from pashq.errors import ConfigError, DriverError, MessageTooLargeError, QueueNotFoundError
from pashq.hookspecs import hookimpl
from pashq.text import REASON_LIMIT, TRACEBACK_LIMIT, safe_text
from pashq_database.claim import Claim, ClaimedRow
from pashq_database.clock import db_now
from pashq_database.coordination import CoordinationHooks
from pashq_database.listener import Listener
from pashq_database.moving import MoveStatements
from pashq_database.options import DatabaseOptions, check_engine_options
from pashq_database.schema import QUEUE_LENGTH, Schema
from pashq_database.statements import HotPath, Receipt
from pashq_database.upgrade import OutdatedTablesError, Step, describe, outdated
from pashq_database.watch import SERVER_INTERVAL, SQLITE_INTERVAL, ChangeWatch

__all__ = ["DatabaseDriver"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: First pause of an idle puller; doubles up to ``poll_interval``.
_FIRST_PAUSE = 0.02
#: Most bound parameters per ``IN (...)`` list.
_IN_CHUNK = 1000
_MISSING_TABLE_CODES = {1146}  # MySQL/MariaDB ER_NO_SUCH_TABLE
#: Largest value a column takes: PostgreSQL's 1 GiB field limit, SQLite's default
#: SQLITE_MAX_LENGTH; MySQL/MariaDB's is read from max_allowed_packet.
_MAX_BODY = {"postgresql": (1 << 30) - 1, "sqlite": 1_000_000_000}
_PACKET_OVERHEAD = 64 * 1024
#: The message_id column's length (schema.py).
_MESSAGE_ID_LENGTH = 64
#: How long a push or settle whose connection broke before COMMIT waits for the server to
#: come back (a restart) before it gives up with DriverError.
_RECONNECT_WAIT = 10.0
#: Pools and listeners a forked child inherited: referenced for ever, so that garbage
#: collection in the child never closes (or sends a goodbye on) the parent's sockets.
_INHERITED: list[Any] = []
#: Every open driver, to reset in a child right after ``os.fork``.
_DRIVERS: weakref.WeakSet[DatabaseDriver] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for driver in list(_DRIVERS):
        driver._check_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ids(messages: Sequence[OutgoingMessage]) -> str:
    shown = ", ".join(m.id for m in messages[:5])
    return shown + (f" and {len(messages) - 5} more" if len(messages) > 5 else "")


def _ascii(text: str, limit: int, keep: str) -> str:
    """``text`` with every non-ASCII character as a Python escape, capped at ``limit``."""
    return safe_text(text.encode("ascii", "backslashreplace").decode("ascii"), limit, keep=keep)


def _describe(exc: BaseException) -> str:
    """One line about a database error, without the SQL or its parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else ''}".rstrip(": ")


def _is_missing_table(exc: sa.exc.DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "42P01":  # PostgreSQL undefined_table
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in _MISSING_TABLE_CODES:
        return True
    return "no such table" in str(orig)


class DatabaseDriver(CoordinationHooks):
    """Queues in SQL tables (see the module docstring for options and guarantees)."""

    name = "database"
    capabilities = Capabilities(
        persistent=True,
        delay=True,
        batch_size=500,
        nack_delay=True,
        lease=True,
        extend_lease=True,
        dead_letters=True,
        stats=True,
        purge=True,
        list_queues=True,
        claim_waiting=True,
        store_attempts=True,
        store_dead_letters=True,
        priorities=True,
        coordination=True,
        defer=True,
    )

    def __init__(self) -> None:
        self.options = DatabaseOptions()
        self.connection_name = "default"
        self._engine: sa.Engine | None = None
        self._tables_ok = threading.Event()
        self._tables_lock = threading.Lock()
        self._idle: dict[str, float] = {}
        self._wake = threading.Condition()
        self._generation = 0
        self._closed = False
        self._listener: Listener | None = None
        self._watch: ChangeWatch | None = None
        self._notify = False
        self._async_claims = False
        self._max_body = 1 << 30
        self._packet: int | None = None
        self._connected = False
        self._pid = os.getpid()
        _DRIVERS.add(self)

    # -- lifecycle ---------------------------------------------------------------------------

    @hookimpl
    def pashq_connect(self, connection: Connection) -> None:
        """Validate the options and build the engine (it connects lazily)."""
        self.connection_name = connection.name
        self.open(
            parse_options(DatabaseOptions, connection.options, connection.where), connection.where
        )

    def open(self, options: DatabaseOptions, where: str = "<options>") -> None:
        """Build the engine, the tables and the statements for ``options``.

        :raises ConfigError: a bad URL, an in-memory SQLite URL or a missing DB-API driver.
        """
        self.options = options
        try:
            url = sa.make_url(options.url)
        except sa.exc.ArgumentError as exc:
            raise ConfigError(f"{where}: 'url' is not a SQLAlchemy URL: {exc}") from None
        self.url = url
        backend = url.get_backend_name()
        kwargs: dict[str, Any] = {}
        if backend == "sqlite":
            if url.database in (None, "", ":memory:") or "mode=memory" in str(url):
                raise ConfigError(
                    f"{where}: 'url' {options.url!r} is an in-memory SQLite database, which "
                    "each connection sees empty; use a file such as sqlite:///pashq.sqlite3"
                )
            kwargs["connect_args"] = {"timeout": 30.0}
        elif backend in ("mysql", "mariadb"):
            kwargs["isolation_level"] = "READ COMMITTED"
        try:
            kwargs.update(check_engine_options(options.engine_options, where))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            engine = sa.create_engine(url, **kwargs)
        except (ModuleNotFoundError, sa.exc.NoSuchModuleError) as exc:
            extra = {"postgresql": "postgresql", "mysql": "mysql", "mariadb": "mysql"}
            hint = extra.get(backend)
            install = f"pip install 'pashq-database[{hint}]'" if hint else "install its driver"
            raise ConfigError(
                f"{where}: no database driver for {url.drivername!r} ({exc}); {install}"
            ) from None
        except (TypeError, ValueError, KeyError, sa.exc.ArgumentError) as exc:
            raise ConfigError(f"{where}: bad 'engine_options': {exc}") from None
        if backend == "sqlite":
            self._tune_sqlite(engine)
        self._engine = engine
        self.schema = Schema.build(options.table_prefix)
        self._build_statements(engine.dialect)
        self._create_tables = (
            options.create_tables if options.create_tables is not None else backend == "sqlite"
        )
        self._notify = backend == "postgresql" and options.listen
        self._async_claims = backend == "postgresql"
        if self._notify and engine.dialect.driver == "psycopg":
            self._listener = Listener(self._listen_connection, self.channel)
        else:
            self._watch = self._new_watch()

    @staticmethod
    def _tune_sqlite(engine: sa.Engine) -> None:
        # pysqlite's own transaction handling defers BEGIN and cannot take the write lock
        # up front; BEGIN IMMEDIATE makes each transaction one atomic claim.
        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(connection: sa.Connection) -> None:
            # Straight to sqlite3: this runs once per transaction, on the hot path.
            connection.connection.driver_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]

    def _build_statements(self, dialect: sa.Dialect) -> None:
        m, dl = self.schema.messages, self.schema.dead_letters
        self._claim = Claim(self.schema, dialect)
        self._moving = MoveStatements(self.schema, dialect)
        self._hot = HotPath(self.schema, dialect)
        # Every settle names the claim: row id, its attempt count and the stored message id
        # (SQLite reuses the row id of a deleted top row, so the id alone is not enough).
        fenced = (
            m.c.id == sa.bindparam("rid"),
            m.c.attempts == sa.bindparam("att"),
            m.c.message_id == sa.bindparam("mid"),
        )
        later = db_now() + sa.bindparam("seconds", type_=sa.Double)
        self._release = sa.update(m).where(*fenced).values(available_at=later)
        self._release = self._release.values(lease_expires_at=None)
        self._extend = sa.update(m).where(*fenced).values(available_at=later)
        self._extend = self._extend.values(lease_expires_at=later)
        self._delete_fenced = sa.delete(m).where(*fenced)
        self._insert_dead = sa.insert(dl).values(failed_at=db_now())
        self._priority_of = sa.select(m.c.priority).where(*fenced)
        self._insert_retried = sa.insert(m).values(
            attempts=0, lease_expires_at=None, available_at=db_now(), created_at=db_now()
        )
        self._pg_notify = sa.select(
            sa.func.pg_notify(
                sa.bindparam("channel", type_=sa.String), sa.bindparam("queue", type_=sa.String)
            )
        )

    def _check_fork(self) -> None:
        """In a forked child, stop using anything the parent process also uses.

        Runs right after ``os.fork`` (``os.register_at_fork``) and, as a fallback for forks
        that bypass it, on every use (one ``getpid`` per transaction). The child gets a new,
        empty pool; the parent's pooled connections are dereferenced without being closed
        (``engine.dispose(close=False)``) and kept alive in :data:`_INHERITED`, so neither a
        close nor garbage collection in the child touches the parent's sessions. Locks and
        the LISTEN connection are replaced too: another thread of the parent may have held
        them at the moment of the fork.
        """
        pid = os.getpid()
        if pid == self._pid:
            return
        self._pid = pid
        self._tables_lock = threading.Lock()
        self._wake = threading.Condition()
        tables_ok, self._tables_ok = self._tables_ok, threading.Event()
        if tables_ok.is_set():
            self._tables_ok.set()
        self._idle = {}
        if self._engine is not None:
            _INHERITED.append(self._engine.pool)
            self._engine.dispose(close=False)
        if self._listener is not None:
            _INHERITED.append(self._listener)
            self._listener = Listener(self._listen_connection, self.channel)
        if self._watch is not None:
            _INHERITED.append(self._watch)
            self._watch = self._new_watch()

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (after :meth:`open`), this process's own."""
        if self._pid != os.getpid():
            self._check_fork()
        if self._engine is None:
            raise DriverError("the database driver is not connected (pashq_connect not called)")
        return self._engine

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden, for messages."""
        return self.url.render_as_string(hide_password=True)

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this table prefix (PostgreSQL)."""
        return self.schema.messages.name

    def _listen_connection(self) -> Any:
        engine = self.engine
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        cparams = {**cparams, "autocommit": True}
        return engine.dialect.loaded_dbapi.connect(*cargs, **cparams)

    def _new_watch(self) -> ChangeWatch | None:
        """The change check of an idle puller where LISTEN is not used (:mod:`.watch`)."""
        engine = self._engine
        assert engine is not None
        dialect = engine.dialect
        if dialect.name == "sqlite":
            return ChangeWatch(self._watch_connection, "PRAGMA data_version", SQLITE_INTERVAL)
        if dialect.driver not in ("pymysql", "mysqldb", "psycopg"):
            return None  # autocommit is set differently: plain polling
        table = dialect.identifier_preparer.format_table(self.schema.messages)
        return ChangeWatch(self._watch_connection, f"SELECT MAX(id) FROM {table}", SERVER_INTERVAL)

    def _watch_connection(self) -> Any:
        engine = self.engine
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        if engine.dialect.name == "sqlite":
            # Autocommit: a connection inside a read transaction would never see a change.
            cparams = {**cparams, "isolation_level": None, "check_same_thread": False}
        else:
            cparams = {**cparams, "autocommit": True}
        return engine.dialect.loaded_dbapi.connect(*cargs, **cparams)

    @hookimpl
    def pashq_close(self) -> None:
        """Stop waiting pullers, close the LISTEN connection and the pool.

        In a forked child this closes only the child's own connections.
        """
        self._check_fork()
        self._closed = True
        _DRIVERS.discard(self)
        with self._wake:
            self._generation += 1
            self._wake.notify_all()
        if self._listener is not None:
            self._listener.close()
        if self._watch is not None:
            self._watch.close()
        if self._engine is not None:
            self._engine.dispose()

    # -- tables ------------------------------------------------------------------------------

    def create_tables(self) -> None:
        """Create the tables and indexes that do not exist yet, and add what tables of an
        older release lack (:mod:`pashq_database.upgrade`)."""
        with self._errors("creating tables", None):
            self.schema.metadata.create_all(self.engine)
        self.upgrade_tables()
        self._tables_ok.set()

    def outdated(self) -> list[Step]:
        """What the existing tables lack (:func:`pashq_database.upgrade.outdated`)."""
        return self._transact("checking tables", None, lambda c: outdated(self.schema, c))

    def upgrade_tables(self) -> list[Step]:
        """Add the columns and indexes tables of an older release lack; return the steps.

        Each step runs in a transaction of its own. A step that fails because another
        process made the same change meanwhile is fine: the tables are checked again.
        """
        steps = self.outdated()
        for step in steps:
            log.warning("adding %s to %s in %s", step.what, step.table, self.safe_url)

            def work(conn: sa.Connection, step: Step = step) -> None:
                for statement in step.statements:
                    conn.execute(statement)

            try:
                self._transact(f"adding {step.what} to {step.table}", None, work)
            except DriverError:
                if any(s.what == step.what for s in self.outdated()):
                    raise
        return steps

    def drop_tables(self) -> None:
        """Drop both tables (and every message and dead letter in them)."""
        with self._errors("dropping tables", None):
            self.schema.metadata.drop_all(self.engine)
        self._tables_ok.clear()

    def ddl(self) -> list[str]:
        """The ``CREATE`` statements for the configured dialect."""
        return self.schema.ddl(self.engine.dialect)

    def _missing_error(self, missing: Sequence[str], queue: str | None) -> QueueNotFoundError:
        on = f" for queue {queue!r}" if queue else ""
        return QueueNotFoundError(
            f"table(s) {', '.join(missing)} do not exist in {self.safe_url}{on} (connection "
            f"{self.connection_name!r}): run `pashq database create` (or add them with "
            "`pashq database migration` if Alembic manages your schema)"
        )

    def check_tables(self, queue: str | None = None) -> None:
        """Make sure the tables exist: create them if allowed, else raise.

        :raises QueueNotFoundError: a table is missing and ``create_tables`` is off.
        """
        if self._tables_ok.is_set():
            return
        with self._tables_lock:
            if self._tables_ok.is_set():
                return
            missing = self._transact("checking tables", queue, self._inspect)
            if missing:
                if not self._create_tables:
                    raise self._missing_error(missing, queue)
                log.info("creating tables %s in %s", ", ".join(missing), self.safe_url)
                self.create_tables()
            elif self._create_tables:
                self.upgrade_tables()
            else:
                steps = self.outdated()
                if steps:
                    raise self._outdated_error(steps, queue)
            self._tables_ok.set()

    def _outdated_error(self, steps: list[Step], queue: str | None) -> OutdatedTablesError:
        on = f" for queue {queue!r}" if queue else ""
        return OutdatedTablesError(
            f"the tables in {self.safe_url}{on} (connection {self.connection_name!r}) were "
            f"made by an older pashq-database and lack {describe(steps)}: run `pashq database "
            "create` to add them (if Alembic manages your schema: `pashq database migration "
            "--upgrade`), or set create_tables = true to let the driver add them"
        )

    def _inspect(self, conn: sa.Connection) -> list[str]:
        """Return the missing tables and learn the largest body the server accepts."""
        name = conn.dialect.name
        if name in ("mysql", "mariadb"):
            packet = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
            self._packet = packet
            # The body travels hex-encoded in the statement (two bytes per byte): a body
            # over half the packet would make the server drop the connection.
            self._max_body = (packet - _PACKET_OVERHEAD) // 2
        else:
            self._max_body = _MAX_BODY.get(name, 1 << 30)
        return self.schema.missing(conn, queues_only=True)

    @contextmanager
    def _errors(self, what: str, queue: str | None) -> Iterator[None]:
        try:
            yield
        except sa.exc.DBAPIError as exc:
            on = f" on queue {queue!r}" if queue else ""
            if _is_missing_table(exc):
                self._tables_ok.clear()
                raise self._missing_error([t.name for t in self.schema.tables], queue) from exc
            raise DriverError(f"{what}{on} failed ({self.safe_url}): {_describe(exc)}") from exc
        except sa.exc.SQLAlchemyError as exc:
            on = f" on queue {queue!r}" if queue else ""
            raise DriverError(f"{what}{on} failed ({self.safe_url}): {_describe(exc)}") from exc

    def _transact(
        self,
        what: str,
        queue: str | None,
        work: Callable[[sa.Connection], T],
        wait: float = 0.0,
        unknown: Callable[[], str] | None = None,
    ) -> T:
        """Run ``work`` in one transaction on a pooled connection and commit.

        A pooled connection that went stale (the server restarted) fails on its first
        statement, before anything was written: SQLAlchemy then invalidates the pool and the
        work runs once more on a fresh connection. This costs nothing on the hot path, unlike
        ``pool_pre_ping``'s extra round trip per transaction. With ``wait`` the fresh
        connection is tried for up to that many seconds (a server that is restarting), still
        only before COMMIT was sent: the failed transaction wrote nothing, so the retry
        cannot duplicate. A connection lost at COMMIT is not retried (the outcome is
        unknown) and surfaces as :class:`DriverError`, with ``unknown()`` telling the
        caller what may or may not have been stored.
        """
        with self._errors(what, queue):
            retrying_until: float | None = None
            pause = 0.1
            while True:
                try:
                    conn = self.engine.connect()
                except sa.exc.DBAPIError as exc:
                    if retrying_until is None and self._connected and wait > 0:
                        # It worked before: a restart, not a wrong URL or password.
                        log.info("%s: waiting for %s (%s)", what, self.safe_url, _describe(exc))
                        retrying_until = time.monotonic() + wait
                    if retrying_until is None or time.monotonic() >= retrying_until:
                        raise
                    time.sleep(pause)  # the server is not back yet
                    pause = min(pause * 2, 1.0)
                    continue
                try:
                    conn.begin()
                    try:
                        result = work(conn)
                    except sa.exc.DBAPIError as exc:
                        if retrying_until is None and exc.connection_invalidated:
                            log.info(
                                "%s: reconnecting to %s after %s",
                                what,
                                self.safe_url,
                                _describe(exc),
                            )
                            retrying_until = time.monotonic() + wait
                            continue
                        raise
                    try:
                        conn.commit()
                    except sa.exc.DBAPIError as exc:
                        if exc.connection_invalidated and unknown is not None:
                            on = f" on queue {queue!r}" if queue else ""
                            raise DriverError(
                                f"{what}{on}: the connection to {self.safe_url} was lost "
                                f"during COMMIT ({_describe(exc)}); {unknown()}"
                            ) from exc
                        raise
                    self._connected = True
                    return result
                finally:
                    conn.close()

    # -- wake-ups ----------------------------------------------------------------------------

    def _poke(self) -> None:
        self._check_fork()
        with self._wake:
            self._generation += 1
            self._wake.notify_all()

    def _wait(self, generation: int, seconds: float) -> None:
        self._check_fork()
        if self._listener is not None:
            got = self._listener.wait(seconds)
            if got:
                # Poll fast for a while: pushes right after this one may not notify.
                self._idle.clear()
            if got is not None:
                return
        with self._wake:
            self._wake.wait_for(
                lambda: self._generation != generation or self._closed, timeout=seconds
            )

    def _wait_change(
        self, watch: ChangeWatch, mark: tuple[Any], generation: int, seconds: float
    ) -> None:
        """Wait up to ``seconds`` for a commit by anyone (the watch) or a push or settle in
        this process (a poke), checking the watch every ``watch.interval``."""
        deadline = time.monotonic() + seconds

        def woken() -> bool:
            return self._generation != generation or self._closed

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with self._wake:
                if self._wake.wait_for(woken, timeout=min(watch.interval, remaining)):
                    return
            if watch.changed(mark):
                return

    def _send_notify(self, conn: sa.Connection, queue: str) -> None:
        conn.execute(self._pg_notify, {"channel": self.channel, "queue": queue})

    # -- the data path -----------------------------------------------------------------------

    @staticmethod
    def _caller_connection(transaction: Any) -> sa.Connection:
        if isinstance(transaction, sa.Connection):
            return transaction
        get = getattr(transaction, "connection", None)
        if callable(get):
            found = get()
            if isinstance(found, sa.Connection):
                return found
        raise TypeError(
            "dispatch option transaction= must be a SQLAlchemy Connection or Session, "
            f"got {type(transaction).__name__}"
        )

    @hookimpl
    def pashq_push(
        self, queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        """Insert the messages in one transaction (the caller's with ``transaction=``)."""
        unknown = set(options) - {"transaction"}
        if unknown:
            raise TypeError(
                f"database driver: unknown dispatch option(s) {', '.join(sorted(unknown))}; "
                "it accepts transaction=<SQLAlchemy Connection or Session>"
            )
        if not self._tables_ok.is_set():
            self.check_tables(queue)
        limit = self._max_body
        for m in messages:
            if len(m.body) > limit:
                raise self._too_large(queue, m, limit)
        rows = [
            (queue, m.id, m.body, float(m.delay) if m.delay > 0 else 0.0, m.priority)
            for m in messages
        ]
        transaction = options.get("transaction")
        # Every dispatch with a message ready now notifies, in its own transaction: the
        # notification goes out at COMMIT, so a listener never wakes for rows it cannot see.
        notify = self._notify and any(m.delay <= 0 for m in messages)
        if transaction is not None:
            with self._errors("push", queue):
                self._write(self._caller_connection(transaction), queue, rows, notify)
        else:
            self._transact(
                "push",
                queue,
                lambda conn: self._write(conn, queue, rows, notify),
                wait=_RECONNECT_WAIT,
                unknown=lambda: (
                    f"{len(rows)} message(s) ({_ids(messages)}) may or may not be stored; "
                    "the server decided, check before dispatching them again (a second "
                    "dispatch may deliver them twice)"
                ),
            )
        self._poke()
        return [m.id for m in messages]

    def _too_large(self, queue: str, m: OutgoingMessage, limit: int) -> MessageTooLargeError:
        where = f"{self.url.get_backend_name()} at {self.safe_url}"
        if self._packet is not None:
            fix = (
                f"; the body travels hex-encoded, so the limit is half of the server's "
                f"max_allowed_packet ({self._packet:,} bytes): raise max_allowed_packet on "
                "the server (e.g. SET GLOBAL max_allowed_packet = 268435456, and in my.cnf) "
                "for larger bodies"
            )
        else:
            fix = ""
        return MessageTooLargeError(
            f"message {m.id} ({m.type_name}) on queue {queue!r} is {len(m.body):,} bytes; "
            f"{where} accepts bodies of at most {limit:,} bytes{fix}; nothing was sent"
        )

    def _write(
        self, conn: sa.Connection, queue: str, rows: list[tuple[Any, ...]], notify: bool
    ) -> None:
        chunks = list(_chunks(rows, self.options.batch_size))
        for chunk in chunks[:-1]:
            self._hot.insert(conn, chunk)
        signal = (self.channel, queue) if notify else None
        if not self._hot.insert(conn, chunks[-1], signal) and notify:
            self._send_notify(conn, queue)

    @hookimpl
    def pashq_check_queue_name(self, queue: str) -> str | None:
        """Refuse names the ``queue`` column cannot hold or compare exactly."""
        if len(queue) > QUEUE_LENGTH:
            return (
                f"is {len(queue)} characters long; the most is {QUEUE_LENGTH} (the queue "
                f"column of {self.schema.messages.name} is VARCHAR({QUEUE_LENGTH}))"
            )
        try:
            queue.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"contains a lone surrogate (U+{ord(queue[exc.start]):04X} at position "
                f"{exc.start}), which is not UTF-8 and no database stores"
            )
        if self.url.get_backend_name() in ("mysql", "mariadb") and queue.endswith(" "):
            return (
                "ends with a space, which MySQL/MariaDB ignore when comparing names: it "
                "would share its rows with the name without the space"
            )
        return None

    @hookimpl
    def pashq_declare(self, queue: str) -> None:
        """Check (or, on SQLite, create) the tables before a worker starts."""
        self.check_tables(queue)

    @hookimpl
    def pashq_pull(self, queue: str, max_messages: int, timeout: float) -> list[Delivery]:
        """Claim up to ``max_messages`` (at most ``batch_size``) rows with a lease.

        An idle puller waits for a wake-up: on PostgreSQL a NOTIFY (sent by every dispatch
        at commit), elsewhere a cheap change check (:mod:`pashq_database.watch`) every few
        milliseconds before each claim, with a claim at least every ``poll_interval``.
        Without either, the pause doubles from 20 ms up to ``poll_interval``.
        """
        limit = max(1, min(max_messages, self.options.batch_size))
        lease = self.options.lease
        deadline = time.monotonic() + max(timeout, 0.0)
        claim = self._claim_without_flush if self._async_claims else self._claim.run
        while True:
            generation = self._generation
            if not self._tables_ok.is_set():
                self.check_tables(queue)
            # Idle (the last claim found nothing): mark before claiming, so a commit right
            # after this claim still counts as a change.
            watch = self._watch if queue in self._idle else None
            mark = watch.mark() if watch is not None else None
            rows = self._transact(
                "pull",
                queue,
                functools.partial(claim, queue=queue, limit=limit, lease=lease),
            )
            if rows:
                self._idle.pop(queue, None)
                return [
                    Delivery(queue, mid, body, attempts, (rid, attempts, mid), lease)
                    for rid, mid, body, attempts, _priority in rows
                ]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closed:
                return []
            if watch is not None and mark is not None:
                self._wait_change(
                    watch, mark, generation, min(self.options.poll_interval, remaining)
                )
                continue
            pause = self._idle.get(queue, _FIRST_PAUSE)
            self._idle[queue] = min(pause * 2, self.options.poll_interval)
            self._wait(generation, min(pause, remaining))

    def _claim_without_flush(
        self, connection: sa.Connection, queue: str, limit: int, lease: float
    ) -> list[ClaimedRow]:
        """The claim, committed without waiting for the WAL flush (PostgreSQL).

        A claim is only a reservation: if a server crash loses it (the last fraction of a
        second of asynchronous commits), the rows are claimable again as if the lease had
        ended, and at-least-once holds. Not waiting for the flush takes one ``fsync`` off
        the path from a dispatch to its handler.
        """
        connection.exec_driver_sql("SET LOCAL synchronous_commit = off")
        return self._claim.run(connection, queue=queue, limit=limit, lease=lease)

    @staticmethod
    def _receipts(deliveries: Sequence[Delivery]) -> list[Receipt]:
        """The claims of ``deliveries``, sorted by row id: every multi-row statement locks
        rows in that one order, so two transactions never deadlock on each other."""
        receipts: list[Receipt] = [d.receipt for d in deliveries]
        receipts.sort()
        return receipts

    @hookimpl
    def pashq_ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Delete the rows still held by these deliveries, in one transaction.

        Fenced on the claim: a delivery whose row was claimed again since (its lease ran
        out) deletes nothing; the current holder settles it.
        """
        receipts = self._receipts(deliveries)
        if not receipts:
            return

        def work(conn: sa.Connection) -> int:
            return sum(self._hot.delete(conn, chunk) for chunk in _chunks(receipts, _IN_CHUNK))

        deleted = self._transact("ack", queue, work, wait=_RECONNECT_WAIT)
        if deleted < len(receipts):
            log.info(
                "%d of %d acks on %r came after their lease ended and the message was "
                "claimed again (or settled); left to the current holder",
                len(receipts) - deleted,
                len(receipts),
                queue,
            )

    def _fenced(self, deliveries: Sequence[Delivery], seconds: float) -> list[dict[str, Any]]:
        return [
            {"rid": rid, "att": att, "mid": mid, "seconds": seconds}
            for rid, att, mid in self._receipts(deliveries)
        ]

    @hookimpl
    def pashq_nack(self, queue: str, deliveries: Sequence[Delivery], delay: float) -> None:
        """Make the rows claimable after ``delay`` seconds; the attempt count stays."""
        if not deliveries:
            return
        params = self._fenced(deliveries, max(delay, 0.0))

        def work(conn: sa.Connection) -> None:
            conn.execute(self._release, params)
            if self._notify and delay <= 0:
                self._send_notify(conn, queue)

        self._transact("nack", queue, work, wait=_RECONNECT_WAIT)
        self._poke()

    @hookimpl
    def pashq_extend(self, queue: str, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Move the lease end of rows still held by this delivery to ``now + seconds``."""
        if not deliveries:
            return
        params = self._fenced(deliveries, seconds)
        self._transact(
            "lease extension",
            queue,
            lambda conn: conn.execute(self._extend, params),
            wait=_RECONNECT_WAIT,
        )

    @hookimpl
    def pashq_dead_letter(
        self, queue: str, delivery: Delivery, reason: str, traceback: str | None
    ) -> None:
        """Move the row to the dead letters in one transaction.

        The reason and traceback are made storable here (:func:`pashq.text.safe_text`):
        text a database refuses (NUL, lone surrogates) would otherwise fail the move and
        bring the message back every lease, for ever.
        """
        rid, attempts, mid = delivery.receipt
        # The envelope's id (the core sets it) if the column can hold it, else the row's
        # (which the column already held).
        message_id = safe_text(delivery.id) if delivery.id else mid
        if len(message_id) > _MESSAGE_ID_LENGTH:
            message_id = mid
        row = {
            "queue": queue,
            "message_id": message_id,
            "body": delivery.body,
            "reason": safe_text(reason, REASON_LIMIT),
            "traceback": (
                None if traceback is None else safe_text(traceback, TRACEBACK_LIMIT, keep="tail")
            ),
            "attempts": attempts,
        }

        def work(conn: sa.Connection) -> None:
            claim = {"rid": rid, "att": attempts, "mid": mid}
            # The dead letter keeps the priority, for a retry (read under the same fence).
            row["priority"] = conn.execute(self._priority_of, claim).scalar() or 0
            deleted = conn.execute(self._delete_fenced, claim)
            if deleted.rowcount != 1:
                log.info(
                    "message %s on %r was claimed again (or settled) before it could be "
                    "dead-lettered; left in the queue",
                    delivery.id,
                    queue,
                )
                return
            conn.execute(self._insert_dead, row)

        try:
            self._transact("dead-letter", queue, work, wait=_RECONNECT_WAIT)
        except DriverError as exc:
            if not isinstance(exc.__cause__, sa.exc.DataError):
                raise
            # The table's character set cannot hold the text (a utf8mb3 or latin1 table, a
            # non-UTF-8 PostgreSQL database): store it as ASCII escapes rather than leave
            # the message to come back every lease.
            log.warning(
                "dead-lettering message %s on %r: the table refused its text (%s); "
                "storing the reason and traceback as ASCII escapes",
                delivery.id,
                queue,
                _describe(exc.__cause__),
            )
            row["reason"] = _ascii(row["reason"], REASON_LIMIT, "head")
            if row["traceback"] is not None:
                row["traceback"] = _ascii(row["traceback"], TRACEBACK_LIMIT, "tail")
            self._transact("dead-letter", queue, work, wait=_RECONNECT_WAIT)

    # -- inspection and administration -------------------------------------------------------

    @hookimpl
    def pashq_stats(self, queue: str) -> QueueStats:
        """Count ready, delayed, in-flight and dead rows of ``queue``."""
        m, dl = self.schema.messages, self.schema.dead_letters
        now = db_now()
        one = sa.literal(1)
        leased = sa.and_(m.c.lease_expires_at.is_not(None), m.c.lease_expires_at > now)
        counts = sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(sa.case((m.c.available_at <= now, one), else_=0)), 0),
            sa.func.coalesce(sa.func.sum(sa.case((leased, one), else_=0)), 0),
        ).where(m.c.queue == queue)
        failed = sa.select(sa.func.count()).select_from(dl).where(dl.c.queue == queue)
        self.check_tables(queue)

        def work(conn: sa.Connection) -> tuple[Any, Any, Any, Any]:
            total, ready, in_flight = conn.execute(counts).one()
            return total, ready, in_flight, conn.execute(failed).scalar_one()

        total, ready, in_flight, dead = self._transact("stats", queue, work)
        total, ready, in_flight = int(total), int(ready), int(in_flight)
        return QueueStats(queue, ready, total - ready - in_flight, in_flight, int(dead))

    @hookimpl
    def pashq_queues(self) -> list[str]:
        """The distinct queues of the messages and dead-letter tables (one query)."""
        m, dl = self.schema.messages, self.schema.dead_letters
        stmt = sa.union(sa.select(m.c.queue).distinct(), sa.select(dl.c.queue).distinct())
        self.check_tables()
        rows = self._transact("listing queues", None, lambda c: c.execute(stmt).scalars().all())
        return sorted(set(rows))

    @hookimpl
    def pashq_purge(self, queue: str) -> int:
        """Delete the waiting rows of ``queue`` (leased rows and dead letters stay)."""
        m = self.schema.messages
        now = db_now()
        waiting = (
            m.c.queue == queue,
            sa.or_(m.c.lease_expires_at.is_(None), m.c.lease_expires_at <= now),
        )
        self.check_tables(queue)
        # Rows a claim is taking right now are skipped: they are about to be leased.
        return self._transact(
            "purge", queue, lambda conn: self._delete_in_id_order(conn, m, waiting, skip=True)
        )

    @staticmethod
    def _delete_in_id_order(
        conn: sa.Connection, table: sa.Table, where: Sequence[Any], skip: bool = False
    ) -> int:
        """Delete the rows matching ``where``, locking them in id order first (as every
        multi-row statement of the driver does, so none deadlocks with another)."""
        if conn.dialect.name == "sqlite":  # one writer at a time: no row locks
            return int(conn.execute(sa.delete(table).where(*where)).rowcount)
        locked = (
            sa.select(table.c.id)
            .where(*where)
            .order_by(table.c.id)
            .with_for_update(skip_locked=skip)
        )
        ids = list(conn.execute(locked).scalars())
        deleted = 0
        for chunk in _chunks(ids, _IN_CHUNK):
            deleted += int(conn.execute(sa.delete(table).where(table.c.id.in_(chunk))).rowcount)
        return deleted

    def _dead_filter(self, queue: str, ids: Sequence[str] | None) -> list[Any]:
        dl = self.schema.dead_letters
        clauses: list[Any] = [dl.c.queue == queue]
        if ids is not None:
            clauses.append(dl.c.message_id.in_(list(ids)))
        return clauses

    @hookimpl
    def pashq_failed_list(self, queue: str, limit: int) -> list[DeadLetter]:
        """Return the oldest ``limit`` dead letters of ``queue``."""
        dl = self.schema.dead_letters
        stmt = sa.select(dl).where(dl.c.queue == queue).order_by(dl.c.id).limit(limit)
        self.check_tables(queue)
        rows = self._transact("listing dead letters", queue, lambda c: c.execute(stmt).all())
        return [
            DeadLetter(
                r.message_id,
                r.queue,
                bytes(r.body),
                r.reason,
                r.traceback,
                r.attempts,
                datetime.fromtimestamp(r.failed_at, UTC),
            )
            for r in rows
        ]

    @hookimpl
    def pashq_failed_retry(self, queue: str, ids: Sequence[str] | None) -> int:
        """Move dead letters back to ``queue`` with a fresh attempt count and their priority,
        in one transaction."""
        if ids is not None and not ids:
            return 0
        dl = self.schema.dead_letters
        select = (
            sa.select(dl.c.id, dl.c.message_id, dl.c.body, dl.c.priority)
            .where(*self._dead_filter(queue, ids))
            .order_by(dl.c.id)
        )
        if self.engine.dialect.name != "sqlite":
            select = select.with_for_update()  # in id order (ORDER BY id)
        self.check_tables(queue)

        def work(conn: sa.Connection) -> int:
            rows = conn.execute(select).all()
            if not rows:
                return 0
            conn.execute(
                self._insert_retried,
                [
                    {
                        "queue": queue,
                        "message_id": r.message_id,
                        "body": bytes(r.body),
                        "priority": r.priority,
                    }
                    for r in rows
                ],
            )
            for chunk in _chunks([r.id for r in rows], _IN_CHUNK):
                conn.execute(sa.delete(dl).where(dl.c.id.in_(chunk)))
            if self._notify:
                self._send_notify(conn, queue)
            return len(rows)

        moved = self._transact("retrying dead letters", queue, work)
        self._poke()
        return moved

    @hookimpl
    def pashq_failed_purge(self, queue: str, ids: Sequence[str] | None) -> int:
        """Delete dead letters of ``queue`` for good."""
        if ids is not None and not ids:
            return 0
        dl, where = self.schema.dead_letters, self._dead_filter(queue, ids)
        self.check_tables(queue)
        return self._transact(
            "purging dead letters", queue, lambda conn: self._delete_in_id_order(conn, dl, where)
        )

    @hookimpl
    def pashq_queue_empty(self, queue: str) -> bool:
        """Whether no row of ``queue`` is claimable now (for ``until_empty``; one query)."""
        m = self.schema.messages
        # The server's clock, as the claim uses: a worker's clock must not decide it.
        stmt = sa.select(m.c.id).where(m.c.queue == queue, m.c.available_at <= db_now()).limit(1)
        self.check_tables(queue)
        return self._transact("empty check", queue, lambda conn: conn.execute(stmt).first() is None)

    # -- pashq move --------------------------------------------------------------------------

    @hookimpl
    def pashq_claim_waiting(self, queue: str, max_messages: int) -> list[WaitingDelivery]:
        """Lease up to ``max_messages`` rows no one holds, due or not, with their due time."""
        limit = max(1, min(max_messages, self.options.batch_size))
        lease = self.options.lease
        self.check_tables(queue)
        rows = self._transact(
            "claiming waiting messages",
            queue,
            lambda conn: self._moving.claim(conn, queue, limit, lease),
        )
        return [
            WaitingDelivery(Delivery(queue, mid, body, att, (rid, att, mid), lease), due_in)
            for rid, mid, body, att, due_in in rows
        ]

    @hookimpl
    def pashq_push_moved(self, queue: str, messages: Sequence[MovedMessage]) -> list[str]:
        """Insert moved messages with their attempts, in one transaction."""
        self.check_tables(queue)
        for moved in messages:
            if len(moved.message.body) > self._max_body:
                raise self._too_large(queue, moved.message, self._max_body)

        def work(conn: sa.Connection) -> None:
            for chunk in _chunks(messages, self.options.batch_size):
                self._moving.insert(conn, queue, chunk)
            if self._notify and any(m.message.delay <= 0 for m in messages):
                self._send_notify(conn, queue)

        self._transact(
            "push",
            queue,
            work,
            wait=_RECONNECT_WAIT,
            unknown=lambda: (
                f"{len(messages)} moved message(s) may or may not be stored; run the move "
                "again (it repeats them by id)"
            ),
        )
        self._poke()
        return [m.message.id for m in messages]

    @hookimpl
    def pashq_failed_store(self, queue: str, dead_letters: Sequence[DeadLetter]) -> list[str]:
        """Insert moved dead letters, skipping ids the queue already keeps."""
        self.check_tables(queue)
        if dead_letters:
            self._transact(
                "storing dead letters",
                queue,
                lambda conn: self._moving.store_dead(conn, queue, dead_letters),
                wait=_RECONNECT_WAIT,
            )
        return [d.id for d in dead_letters]

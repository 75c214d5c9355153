"""pashq-database beside raw SQLAlchemy and, on PostgreSQL, procrastinate and kombu
(``python bench/bench_database.py``).

Same workload as every pashq benchmark (see ``harness.py``): N messages of 253-byte JSON,
published from one process, then consumed with acknowledgement in one process. Backends:
SQLite (a fresh file in a temporary directory; WAL, synchronous=NORMAL), PostgreSQL on
``PASHQ_BENCH_POSTGRESQL_URL`` and MariaDB on ``PASHQ_BENCH_MYSQL_URL`` (defaults: the
servers of the development machine). Every case uses fresh tables, dropped afterwards.

Cases per backend:

- ``pashq``: ``dispatch_many`` of N typed messages (one transaction, multi-row inserts of
  ``batch_size``), then ``Worker.run(until_empty=True)`` (claims of up to 500 rows per
  transaction, one batched DELETE per batch of acks).
- ``raw SQLAlchemy, batched``: the ceiling: ``executemany`` INSERTs of 500 rows per
  transaction; claim 500 per transaction (``UPDATE ... RETURNING`` with ``SKIP LOCKED`` on
  PostgreSQL, ``SELECT ... FOR UPDATE SKIP LOCKED`` + ``UPDATE`` on MariaDB, ``BEGIN
  IMMEDIATE`` + ``UPDATE ... RETURNING`` on SQLite); one DELETE per batch.
- ``pashq, single dispatch()`` and ``raw SQLAlchemy, INSERT+COMMIT each``: publishing one
  message per transaction (the consume column is empty: the rows are read back once to
  check every id, untimed).

Peers on PostgreSQL, in a second table with a smaller N (they are 25-100x slower):
``procrastinate`` (``batch_defer``, worker with concurrency 10, ``listen_notify``) and
``kombu`` with its SQLAlchemy transport (``sqla+postgresql://``).

Needs the ``bench`` extra for the peers: ``pip install -e "plugins/pashq-database[bench]"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from harness import Phases, Timer, body, main, payload

import pashq
from pashq_database import Schema

POSTGRESQL_URL = os.environ.get(
    "PASHQ_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("PASHQ_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
BATCH = 500
PEERS_N = 2_000
consumed: list[int] = []


@attrs.define
class InvoicePaid(pashq.Message, type_name="bench.invoice_paid"):
    """The benchmark message: 253 bytes of JSON."""

    id: int
    event: str
    payload: str

    def process_message(self) -> None:
        consumed.append(self.id)


def _url(backend: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tempfile.mkdtemp(prefix='pashq-bench-')}/bench.sqlite3"
    url = POSTGRESQL_URL if backend == "postgresql" else MYSQL_URL
    _settle(url)
    return url


def _settle(url: str) -> None:
    """Flush the previous case's writes (CHECKPOINT) so they do not slow this one."""
    if url.startswith("postgresql"):
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as c:
            c.exec_driver_sql("CHECKPOINT")
        engine.dispose()


def _prefix() -> str:
    return f"bench{uuid.uuid4().hex[:6]}_"


# -- pashq ------------------------------------------------------------------------------------


def _open(backend: str) -> tuple[pashq.Connection, Any]:
    """Configure pashq on a fresh table set of ``backend``; return the connection and driver."""
    pashq.configure(
        {
            "queues": {
                "default": {
                    "type": "database",
                    "url": _url(backend),
                    "table_prefix": _prefix(),
                    "create_tables": True,
                }
            }
        }
    )
    conn = pashq.queue("default")
    driver: Any = conn.driver
    driver.create_tables()
    return conn, driver


def _pashq(backend: str, single: bool) -> Callable[[int], Phases]:
    def run(n: int) -> Phases:
        conn, driver = _open(backend)
        messages = [InvoicePaid(**payload(i)) for i in range(n)]  # type: ignore[arg-type]
        try:
            if single:
                with Timer() as pub:
                    for m in messages:
                        conn.dispatch("bench", m)
                ids = _read_back(driver.engine, driver.schema.messages)
                return Phases(pub.seconds, 0.0, ids)
            with Timer() as pub:
                conn.dispatch_many("bench", messages)
            worker = pashq.Worker(
                "bench", connection=conn, install_signal_handlers=False, poll_timeout=0.0
            )
            with Timer() as con:
                worker.run(until_empty=True)
            return Phases(pub.seconds, con.seconds, list(consumed))
        finally:
            driver.drop_tables()
            pashq.close()

    return run


def _hooks(backend: str) -> Callable[[int], Phases]:
    """The driver alone: pashq_push of prebuilt envelopes, pashq_pull + pashq_ack."""

    def run(n: int) -> Phases:
        import json

        from pashq.delivery import OutgoingMessage
        from pashq.envelope import Envelope, encode_envelope, new_message_id, utc_timestamp

        conn, driver = _open(backend)
        hook = conn.hook
        ts = utc_timestamp()
        outgoing = []
        for i in range(n):
            mid = new_message_id()
            data = encode_envelope(Envelope(mid, "bench.invoice_paid", payload(i), ts, {}))
            outgoing.append(OutgoingMessage(mid, "bench.invoice_paid", data))
        ids: list[int] = []
        try:
            with Timer() as pub:
                for start in range(0, n, BATCH):
                    hook.pashq_push(
                        queue="bench", messages=outgoing[start : start + BATCH], options={}
                    )
            with Timer() as con:
                while True:
                    got = hook.pashq_pull(queue="bench", max_messages=BATCH, timeout=0)
                    if not got:
                        break
                    ids.extend(json.loads(d.body)["body"]["id"] for d in got)
                    hook.pashq_ack(queue="bench", deliveries=got)
            return Phases(pub.seconds, con.seconds, ids)
        finally:
            driver.drop_tables()
            pashq.close()

    return run


def _read_back(engine: sa.Engine, table: sa.Table) -> list[int]:
    import json

    with engine.connect() as c:
        bodies = c.execute(sa.select(table.c.body)).scalars().all()
    return [json.loads(bytes(b))["body"]["id"] for b in bodies]


# -- raw SQLAlchemy ---------------------------------------------------------------------------


def _raw_engine(backend: str) -> tuple[sa.Engine, Schema]:
    url = _url(backend)
    kwargs: dict[str, Any] = {}
    if backend == "mariadb":
        kwargs["isolation_level"] = "READ COMMITTED"
    engine = sa.create_engine(url, **kwargs)
    if backend == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _connect(dbapi: Any, record: Any) -> None:
            dbapi.isolation_level = None
            dbapi.execute("PRAGMA journal_mode=WAL")
            dbapi.execute("PRAGMA synchronous=NORMAL")

        @sa.event.listens_for(engine, "begin")
        def _begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    schema = Schema.build(_prefix())
    schema.metadata.create_all(engine)
    return engine, schema


def _claim_sql(backend: str, table: str) -> tuple[sa.TextClause, sa.TextClause | None]:
    if backend == "mariadb":
        select = sa.text(
            f"SELECT id, body FROM {table} WHERE queue = :q AND available_at <= :now "
            f"ORDER BY available_at, id LIMIT {BATCH} FOR UPDATE SKIP LOCKED"
        )
        update = sa.text(
            f"UPDATE {table} SET attempts = attempts + 1, available_at = :until WHERE id IN :ids"
        ).bindparams(sa.bindparam("ids", expanding=True))
        return select, update
    if backend == "postgresql":  # ANY(ARRAY(...)): PK lookups, not a hash join + seq scan
        return sa.text(
            f"UPDATE {table} SET attempts = attempts + 1, available_at = :until WHERE id = "
            f"ANY(ARRAY(SELECT id FROM {table} WHERE queue = :q AND available_at <= :now "
            f"ORDER BY available_at, id LIMIT {BATCH} FOR UPDATE SKIP LOCKED)) RETURNING id, body"
        ), None
    return sa.text(
        f"UPDATE {table} SET attempts = attempts + 1, available_at = :until WHERE id IN "
        f"(SELECT id FROM {table} WHERE queue = :q AND available_at <= :now "
        f"ORDER BY available_at, id LIMIT {BATCH}) RETURNING id, body"
    ), None


def _raw(backend: str, single: bool) -> Callable[[int], Phases]:
    def run(n: int) -> Phases:
        import json

        engine, schema = _raw_engine(backend)
        table = schema.messages
        insert = sa.insert(table)
        now = time.time()
        rows = [
            {
                "queue": "bench",
                "message_id": uuid.uuid4().hex,
                "body": body(i),
                "attempts": 0,
                "available_at": now,
                "lease_expires_at": None,
                "created_at": now,
            }
            for i in range(n)
        ]
        try:
            if single:
                with Timer() as pub:
                    for row in rows:
                        with engine.begin() as c:
                            c.execute(insert, row)
                return Phases(pub.seconds, 0.0, _read_back_raw(engine, table))
            with Timer() as pub:
                for start in range(0, n, BATCH):
                    with engine.begin() as c:
                        c.execute(insert, rows[start : start + BATCH])
            claim, update = _claim_sql(backend, table.name)
            delete = sa.text(f"DELETE FROM {table.name} WHERE id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            )
            ids: list[int] = []
            with Timer() as con:
                while True:
                    t = time.time()
                    with engine.begin() as c:
                        got = c.execute(claim, {"q": "bench", "now": t, "until": t + 30}).all()
                        if update is not None and got:
                            c.execute(update, {"ids": [r[0] for r in got], "until": t + 30})
                    if not got:
                        break
                    ids.extend(json.loads(bytes(r[1]))["id"] for r in got)
                    with engine.begin() as c:
                        c.execute(delete, {"ids": [r[0] for r in got]})
            return Phases(pub.seconds, con.seconds, ids)
        finally:
            schema.metadata.drop_all(engine)
            engine.dispose()

    return run


def _read_back_raw(engine: sa.Engine, table: sa.Table) -> list[int]:
    import json

    with engine.connect() as c:
        bodies = c.execute(sa.select(table.c.body)).scalars().all()
    return [json.loads(bytes(b))["id"] for b in bodies]


# -- peers on PostgreSQL ----------------------------------------------------------------------


def _procrastinate(n: int) -> Phases:
    import procrastinate

    url = sa.make_url(POSTGRESQL_URL)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    conninfo = (
        f"host={url.host} port={url.port or 5432} user={url.username} dbname={url.database}"
        f" options=-csearch_path={schema}"
    )
    admin = sa.create_engine(POSTGRESQL_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE SCHEMA {schema}")
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    seen: list[int] = []

    @app.task(name="invoice_paid")
    def invoice_paid(**kwargs: Any) -> None:
        seen.append(kwargs["id"])

    async def go() -> Phases:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            with Timer() as pub:
                for start in range(0, n, 1000):
                    await invoice_paid.batch_defer_async(
                        *(payload(i) for i in range(start, min(n, start + 1000)))
                    )
            with Timer() as con:
                await app.run_worker_async(concurrency=10, wait=False, listen_notify=True)
            return Phases(pub.seconds, con.seconds, list(seen))

    try:
        return asyncio.run(go())
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def _kombu(n: int) -> Phases:
    import json

    from kombu import Connection, Queue

    url = sa.make_url(POSTGRESQL_URL).set(drivername="postgresql+psycopg")
    name = f"bench{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRESQL_URL)
    with admin.connect() as c:
        existed = sa.inspect(c).has_table("kombu_message")
    seen: list[int] = []
    with Connection(f"sqla+{url.render_as_string(hide_password=False)}") as conn:
        queue = Queue(name)
        producer = conn.Producer(serializer="json")
        with Timer() as pub:
            for i in range(n):
                producer.publish(payload(i), routing_key=name, declare=[queue])

        def on_message(body_: Any, message: Any) -> None:
            seen.append((body_ if isinstance(body_, dict) else json.loads(body_))["id"])
            message.ack()

        with Timer() as con, conn.Consumer(queue, callbacks=[on_message], accept=["json"]):
            while len(seen) < n:
                conn.drain_events(timeout=5)
        with contextlib.suppress(Exception):  # best effort: the table holds only this queue
            conn.default_channel.queue_delete(name)
    if not existed:  # kombu created its two tables for this run: leave nothing behind
        with admin.begin() as c:
            c.exec_driver_sql("DROP TABLE IF EXISTS kombu_message, kombu_queue")
    admin.dispose()
    return Phases(pub.seconds, con.seconds, seen)


# -- main -------------------------------------------------------------------------------------

FAST: dict[str, Callable[[int], Phases]] = {}
for _backend in ("sqlite", "postgresql", "mariadb"):
    FAST[f"pashq {_backend}: dispatch_many + worker"] = _pashq(_backend, single=False)
    FAST[f"pashq {_backend}: driver hooks only (push/pull/ack {BATCH})"] = _hooks(_backend)
    FAST[f"raw SQLAlchemy {_backend}: batches of {BATCH}, claim {BATCH}"] = _raw(
        _backend, single=False
    )
    FAST[f"pashq {_backend}: single dispatch()"] = _pashq(_backend, single=True)
    FAST[f"raw SQLAlchemy {_backend}: INSERT+COMMIT each"] = _raw(_backend, single=True)
PEERS: dict[str, Callable[[int], Phases]] = {
    "pashq postgresql: dispatch_many + worker": FAST["pashq postgresql: dispatch_many + worker"],
    "procrastinate postgresql: batch_defer + worker(concurrency=10)": _procrastinate,
    "kombu sqlalchemy transport postgresql": _kombu,
}


def _single_ratio(backend: str, n: int) -> tuple[float, float]:
    """Interleave one raw SQLAlchemy INSERT+COMMIT and one ``dispatch()``, n times each, so
    load changes on the machine hit both alike; return their median latencies (µs)."""
    import statistics

    url = _url(backend)
    pashq.configure(
        {
            "queues": {
                "default": {
                    "type": "database",
                    "url": url,
                    "table_prefix": _prefix(),
                    "create_tables": True,
                }
            }
        }
    )
    conn = pashq.queue("default")
    driver: Any = conn.driver
    driver.create_tables()
    engine, schema = _raw_engine(backend)
    insert = sa.insert(schema.messages)
    raw: list[float] = []
    ours: list[float] = []
    try:
        for i in range(n):
            message = InvoicePaid(**payload(i))  # type: ignore[arg-type]
            now = time.time()
            row = {
                "queue": "bench",
                "message_id": uuid.uuid4().hex,
                "body": body(i),
                "attempts": 0,
                "available_at": now,
                "lease_expires_at": None,
                "created_at": now,
            }
            t0 = time.perf_counter()
            with engine.begin() as c:
                c.execute(insert, row)
            t1 = time.perf_counter()
            conn.dispatch("bench", message)
            t2 = time.perf_counter()
            raw.append(t1 - t0)
            ours.append(t2 - t1)
    finally:
        driver.drop_tables()
        schema.metadata.drop_all(engine)
        engine.dispose()
        pashq.close()
    return statistics.median(raw) * 1e6, statistics.median(ours) * 1e6


def _run_both(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="pashq-database benchmark")
    parser.add_argument("-n", type=int, default=20_000, help="messages per run (own cases)")
    parser.add_argument("--peers-n", type=int, default=PEERS_N, help="messages per peer run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument(
        "--single-n",
        type=int,
        default=2_000,
        help="interleaved single dispatch() vs INSERT+COMMIT pairs per backend",
    )
    args = parser.parse_args(argv)
    only = [x for o in args.only for x in ("--only", o)]
    status = 0
    runs = [(FAST, args.n, "pashq-database")]
    if not args.no_peers:
        runs.append((PEERS, args.peers_n, "PostgreSQL peers (smaller N: they are slow)"))
    for cases, n, title in runs:
        if args.only and not any(o in c for c in cases for o in args.only):
            continue
        try:
            main(cases, title=title, argv=["-n", str(n), "--repeat", str(args.repeat), *only])
        except SystemExit as exc:
            status = status or int(exc.code or 0)
    if args.single_n and not args.only:
        print(
            "\nSingle dispatch() vs one raw SQLAlchemy INSERT+COMMIT, interleaved "
            f"({args.single_n:,} pairs per backend, median latency)\n"
        )
        print("| backend | raw INSERT+COMMIT µs | pashq dispatch() µs | ratio |")
        print("|---|---:|---:|---:|")
        for backend in ("sqlite", "postgresql", "mariadb"):
            raw, ours = _single_ratio(backend, args.single_n)
            print(f"| {backend} | {raw:,.0f} | {ours:,.0f} | {ours / raw:.2f} |", flush=True)
    return status


if __name__ == "__main__":
    if "--child" in sys.argv:
        main({**FAST, **PEERS})
    else:
        sys.exit(_run_both(sys.argv[1:]))

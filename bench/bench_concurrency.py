"""The worker engine under concurrency (issue 8), on memory, SQLite, PostgreSQL and RabbitMQ.

Cases (each drains a pre-filled queue with one ``Worker.run(until_empty=True)`` in a fresh
subprocess; the dispatch is not timed):

- ``trivial c=1`` / ``c=4`` / ``c=16``: handlers that do nothing, at concurrency 1, 4, 16.
- ``sleep 50 ms sync c=32``: ``time.sleep(0.05)`` handlers; ideal 32 / 0.05 = 640 msg/s.
- ``sleep 100 ms async c=1000``: ``await asyncio.sleep(0.1)``; ideal 10,000 msg/s.

Each row gives msg/s over the whole ``run()`` and ``drain/run``: the time until the last
ack divided by the time until ``run()`` returned (1.0 = the final empty check costs
nothing; the issue's target is >= 0.9).

    python bench/bench_concurrency.py                       # every backend, N per case below
    python bench/bench_concurrency.py --only memory --repeat 3

PostgreSQL on ``PASHQ_BENCH_POSTGRESQL_URL``, RabbitMQ on ``PASHQ_BENCH_RABBITMQ_URL``
(defaults: the local test servers; RabbitMQ with ``prefetch = max(100, 2 x concurrency)``).
Tables and queues get random names and are dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Generator, Sequence
from typing import Any

import attrs

import pashq
from pashq.delivery import Delivery

POSTGRESQL_URL = os.environ.get(
    "PASHQ_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
RABBITMQ_URL = os.environ.get("PASHQ_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

BACKENDS = ("memory", "sqlite", "postgresql", "rabbitmq")
# case name -> (handler kind, seconds, concurrency, messages)
CASES: dict[str, tuple[str, float, int, int]] = {
    "trivial c=1": ("trivial", 0.0, 1, 20_000),
    "trivial c=4": ("trivial", 0.0, 4, 20_000),
    "trivial c=16": ("trivial", 0.0, 16, 20_000),
    "sleep 50 ms sync c=32": ("sync", 0.05, 32, 1_920),
    "sleep 100 ms async c=1000": ("async", 0.1, 1000, 20_000),
}


@attrs.define
class Trivial(pashq.Message, type_name="bench.concurrency.trivial"):
    n: int

    def process_message(self) -> None:
        pass


@attrs.define
class SleepSync(pashq.Message, type_name="bench.concurrency.sleep_sync"):
    n: int
    seconds: float

    def process_message(self) -> None:
        time.sleep(self.seconds)


@attrs.define
class SleepAsync(pashq.Message, type_name="bench.concurrency.sleep_async"):
    n: int
    seconds: float

    async def process_message(self) -> None:
        await asyncio.sleep(self.seconds)


class LastAck:
    """Records when the last ack call returned."""

    at = 0.0

    @pashq.hookimpl(wrapper=True)
    def pashq_ack(self, queue: str, deliveries: Sequence[Delivery]) -> Generator[None, None, None]:
        result = yield
        self.at = time.perf_counter()
        return result


def _table(backend: str, prefix: str, concurrency: int = 1) -> dict[str, Any]:
    if backend == "memory":
        return {"type": "memory"}
    if backend == "sqlite":
        path = f"{tempfile.mkdtemp(prefix='pashq-bench-')}/bench.sqlite3"
        return {"type": "database", "url": f"sqlite:///{path}", "create_tables": True}
    if backend == "postgresql":
        return {
            "type": "database",
            "url": POSTGRESQL_URL,
            "table_prefix": prefix,
            "create_tables": True,
        }
    # The broker's prefetch window must cover the handlers in flight (the driver's default
    # of 100 would cap 1,000 async handlers at 100 in flight).
    return {"type": "rabbitmq", "url": RABBITMQ_URL, "prefetch": max(100, 2 * concurrency)}


def _cleanup(backend: str, prefix: str, queue: str) -> None:
    if backend == "postgresql":
        import sqlalchemy as sa

        engine = sa.create_engine(POSTGRESQL_URL)
        meta = sa.MetaData()
        meta.reflect(engine, only=lambda name, _: name.startswith(prefix))
        meta.drop_all(engine)
        engine.dispose()
    elif backend == "rabbitmq":
        import pika

        with pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL)) as connection:
            channel = connection.channel()
            for name in (queue, f"{queue}.failed"):
                channel.queue_delete(name)


def _child(backend: str, case: str) -> None:
    kind, seconds, concurrency, n = CASES[case]
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    queue = f"bench-conc-{uuid.uuid4().hex[:8]}"
    pashq.configure({"queues": {"default": _table(backend, prefix, concurrency)}})
    conn = pashq.queue()
    last = LastAck()
    conn.plugin_manager.register(last)
    messages: list[pashq.Message]
    if kind == "trivial":
        messages = [Trivial(i) for i in range(n)]
    elif kind == "sync":
        messages = [SleepSync(i, seconds) for i in range(n)]
    else:
        messages = [SleepAsync(i, seconds) for i in range(n)]
    for start in range(0, n, 1000):
        conn.dispatch_many(queue, messages[start : start + 1000])
    worker = pashq.Worker(queue, concurrency=concurrency, install_signal_handlers=False)
    started = time.perf_counter()
    stats = worker.run(until_empty=True)
    ended = time.perf_counter()
    ok = stats.acked == n
    pashq.close()
    _cleanup(backend, prefix, queue)
    run_s, drain_s = ended - started, last.at - started
    print("RESULT " + json.dumps({"ok": ok, "acked": stats.acked, "run": run_s, "drain": drain_s}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", help="backends or cases containing this text")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (median)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return
    print("| backend | case | N | msg/s | vs c=1 | vs ideal | drain/run |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for backend in BACKENDS:
        base = None
        for case, (kind, seconds, concurrency, n) in CASES.items():
            label = f"{backend} {case}"
            if args.only and not any(o in label for o in args.only):
                continue
            runs = []
            for _ in range(args.repeat):
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", backend, case],
                    capture_output=True,
                    text=True,
                )
                lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode or not lines:
                    print(f"{label}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                    break
                run = json.loads(lines[-1][7:])
                if not run["ok"]:
                    print(f"{label}: acked {run['acked']} of {n}", file=sys.stderr)
                    break
                runs.append(run)
            if len(runs) < args.repeat:
                continue
            run_s = statistics.median(r["run"] for r in runs)
            ratio = statistics.median(r["drain"] / r["run"] for r in runs)
            rate = n / run_s
            if case == "trivial c=1":
                base = rate
            vs_c1 = f"{rate / base:.2f}" if kind == "trivial" and base else ""
            ideal = concurrency / seconds if seconds else 0.0
            vs_ideal = f"{rate / ideal:.2f}" if ideal else ""
            cells = [backend, case, f"{n:,}", f"{rate:,.0f}", vs_c1, vs_ideal, f"{ratio:.2f}"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

"""Unique dispatch beside plain dispatch on the database driver (``python bench/bench_unique.py``).

Cases, each N messages of one PostgreSQL table set (``PASHQ_BENCH_POSTGRESQL_URL``,
default the development server; ``--backend sqlite`` or ``mariadb`` for the others):

- ``dispatch()``: one message per call (one transaction each), plain class;
- ``dispatch() unique``: the same with ``unique_for=600`` and a distinct key per message
  (every call takes its key and inserts, in one transaction);
- ``dispatch() duplicate``: the same key every call after the first (a key check, no
  insert);
- ``dispatch_many()`` and ``dispatch_many() unique``: batches of 500.

The cases run interleaved for ``--rounds`` rounds on fresh tables; the report gives each
case's median rate and the median over rounds of the unique/plain ratio (measured within
one round, so a loaded machine slows both sides of a ratio alike).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable

import attrs

import pashq

URLS = {
    "postgresql": os.environ.get(
        "PASHQ_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("PASHQ_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


@attrs.define
class Plain(pashq.Message, type_name="bench.plain"):
    """A plain message (253-byte body like the other benchmarks)."""

    id: int
    payload: str = "x" * 200

    def process_message(self) -> None:
        pass


@attrs.define
class Unique(pashq.Message, type_name="bench.unique", unique_for=600):
    """The same message, unique per ``id`` for ten minutes."""

    id: int
    payload: str = "x" * 200

    def get_unique_key(self) -> str:
        return f"{RUN}:{self.id}"

    def process_message(self) -> None:
        pass


RUN = uuid.uuid4().hex[:8]


def _timed(n: int, work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return n / (time.perf_counter() - started)


def run_round(url: str, n: int, offset: int) -> dict[str, float]:
    """One round of every case on fresh tables; messages per second."""
    prefix = f"bu{uuid.uuid4().hex[:6]}_"
    pashq.configure(
        {
            "queues": {
                "default": {
                    "type": "database",
                    "url": url,
                    "table_prefix": prefix,
                    "create_tables": True,
                }
            }
        }
    )
    conn = pashq.queue()
    conn.driver.create_tables()
    conn.dispatch("warm", Plain(0))
    conn.dispatch("warm", Unique(-1 - offset))
    rates: dict[str, float] = {}
    try:
        rates["dispatch()"] = _timed(n, lambda: [conn.dispatch("p", Plain(i)) for i in range(n)])
        rates["dispatch() unique"] = _timed(
            n, lambda: [conn.dispatch("u", Unique(offset + i)) for i in range(n)]
        )
        same = Unique(offset + n + 1)
        rates["dispatch() duplicate"] = _timed(
            n, lambda: [conn.dispatch("d", same) for _ in range(n)]
        )
        batches = [list(range(s, s + 500)) for s in range(0, n * 5, 500)]
        rates["dispatch_many()"] = _timed(
            n * 5, lambda: [conn.dispatch_many("pm", [Plain(i) for i in b]) for b in batches]
        )
        base = offset + 10 * n
        rates["dispatch_many() unique"] = _timed(
            n * 5,
            lambda: [conn.dispatch_many("um", [Unique(base + i) for i in b]) for b in batches],
        )
    finally:
        conn.driver.drop_tables()
        pashq.close()
    return rates


def main() -> None:
    """Run the rounds and print the table (Markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", default="postgresql", choices=["postgresql", "mariadb", "sqlite"]
    )
    parser.add_argument("-n", type=int, default=2000, help="messages per single-dispatch case")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    url = URLS.get(args.backend) or f"sqlite:////tmp/pashq-bench-unique-{RUN}.sqlite3"
    rounds = [run_round(url, args.n, r * 100 * args.n) for r in range(args.rounds)]
    print(
        f"{args.backend}, n={args.n} single / {args.n * 5} batched, {args.rounds} rounds, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print("| case | msg/s (median) | ratio to plain (median of rounds) |")
    print("|---|---:|---:|")
    for case in rounds[0]:
        plain = "dispatch_many()" if case.startswith("dispatch_many") else "dispatch()"
        rate = statistics.median(r[case] for r in rounds)
        ratio = statistics.median(r[case] / r[plain] for r in rounds)
        print(f"| {case} | {rate:,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()

"""How long the dashboard's overview takes with 200 queues on PostgreSQL
(``python bench/bench_dashboard.py [--queues N] [--rounds R]``).

Fresh tables (a new ``table_prefix``, dropped afterwards) on ``PASHQ_BENCH_POSTGRESQL_URL``
(default: the development machine's server) hold N queues of 5 waiting messages each; every
fourth queue also has one dead letter. The overview lists the queues (``pashq_queues``: one
query), then asks ``pashq_stats`` of each (one transaction per queue, four queues at once)
and renders the page.

Measured in one process, R rounds after one warm-up round:

- ``GET /``: the whole request through Starlette's TestClient (in process, no socket);
- ``counts, one by one``: ``Connection.queues()`` and ``stats()`` of every queue in one
  thread, no page (what a loop over ``pashq stats`` costs without the process start);
- their ratio per round, so a loaded machine shifts both columns alike.

Medians; the machine is shared (other builds and tests run on its 2 cores).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

from starlette.testclient import TestClient

import pashq
from pashq.delivery import OutgoingMessage
from pashq.envelope import Envelope, encode_envelope, new_message_id, utc_timestamp
from pashq_dashboard import create_app

POSTGRESQL_URL = os.environ.get(
    "PASHQ_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _message(i: int) -> OutgoingMessage:
    envelope = Envelope(new_message_id(), "bench.dashboard", {"n": i}, utc_timestamp(), {})
    return OutgoingMessage(envelope.id, envelope.type, encode_envelope(envelope))


def _fill(conn: pashq.Connection, queues: int) -> None:
    for q in range(queues):
        name = f"queue-{q:03d}"
        conn.hook.pashq_push(queue=name, messages=[_message(i) for i in range(5)], options={})
        if q % 4 == 0:
            (delivery,) = conn.hook.pashq_pull(queue=name, max_messages=1, timeout=1.0)
            conn.hook.pashq_dead_letter(
                queue=name, delivery=delivery, reason="bench", traceback=None
            )


def main() -> None:
    """Fill the tables, time the overview, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    table = {
        "type": "database",
        "url": POSTGRESQL_URL,
        "table_prefix": f"bench_dash_{uuid.uuid4().hex[:6]}_",
        "create_tables": True,
        "listen": False,
    }
    pashq.configure({"queues": {"default": table}})
    conn = pashq.queue("default")
    try:
        _fill(conn, args.queues)
        client = TestClient(create_app(), base_url="http://127.0.0.1")
        page, counts, ratios = [], [], []
        for round_ in range(args.rounds + 1):
            started = time.perf_counter()
            response = client.get("/")
            middle = time.perf_counter()
            names = conn.queues()
            for name in names:
                conn.stats(name)
            ended = time.perf_counter()
            assert response.status_code == 200, response.status_code
            assert response.text.count("data-queue=") == args.queues, "queues missing"
            assert len(names) == args.queues
            if round_ == 0:
                continue  # warm-up: connections, statement caches, templates
            page.append(middle - started)
            counts.append(ended - middle)
            ratios.append((middle - started) / (ended - middle))
        print(
            f"dashboard overview, {args.queues} queues on PostgreSQL, "
            f"{args.rounds} rounds (median; machine shared)"
        )
        print(f"  GET /              {statistics.median(page) * 1000:8.1f} ms")
        print(f"  counts, one by one {statistics.median(counts) * 1000:8.1f} ms")
        print(f"  ratio              {statistics.median(ratios):8.2f}x  (page / counts)")
        print(f"  page bytes         {len(response.content):8,d}")
    finally:
        conn.driver.drop_tables()
        pashq.reset()


if __name__ == "__main__":
    main()

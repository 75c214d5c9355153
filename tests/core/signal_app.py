"""A worker process for the signal tests: memory queue of slow messages, JSON report."""

from __future__ import annotations

import json
import sys
import time

import attrs

import pashq

processed: list[int] = []


@attrs.define
class Slow(pashq.Message, type_name="tests.signal.slow"):
    n: int
    seconds: float

    def process_message(self) -> None:
        print(f"start {self.n}", flush=True)
        time.sleep(self.seconds)
        processed.append(self.n)


concurrency, seconds = int(sys.argv[1]), float(sys.argv[2])
pashq.configure({"queues": {"default": {"type": "memory"}}})
connection = pashq.queue()
connection.dispatch_many("default", [Slow(i, seconds) for i in range(40)])
stats = pashq.Worker(
    "default", concurrency=concurrency, batch_size=40, shutdown_timeout=float(sys.argv[3])
).run()
report = {
    "processed": processed,
    "acked": stats.acked,
    "released": stats.released,
    "interrupted": stats.interrupted,
    "ready": connection.stats("default").ready,
    "in_flight": connection.stats("default").in_flight,
}
print("REPORT " + json.dumps(report), flush=True)
sys.exit(1 if stats.interrupted else 0)

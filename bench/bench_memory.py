"""The core's own overhead on the memory driver (`./dev bench`, or run this file).

Cases:
- ``raw deque``: the floor — append the JSON bytes to a deque, pop and json-decode them.
- ``pashq memory``: ``dispatch_many`` of typed messages, then ``Worker.run(until_empty=True)``.
- ``pashq memory, 4 threads``: the same with ``concurrency=4``.
- ``pashq memory, no-op process wrapper``: ``pashq memory`` with one ``pashq_process``
  wrapper that only yields (the cost of middleware around each delivery; issue 9 asks for
  >= 0.8x the drain rate without it).

``--flat-rss N`` instead streams N messages through in chunks of 10,000 (dispatch_many, then
drain) and prints the process RSS along the way, to show memory stays flat.
"""

from __future__ import annotations

import collections
import json
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).parent))

from harness import Phases, Timer, body, main, payload

import pashq

consumed: list[int] = []


@attrs.define
class InvoicePaid(pashq.Message, type_name="bench.invoice_paid"):
    """The benchmark message: 253 bytes of JSON."""

    id: int
    event: str
    payload: str

    def process_message(self) -> None:
        consumed.append(self.id)


def raw_deque(n: int) -> Phases:
    queue: collections.deque[bytes] = collections.deque()
    with Timer() as pub:
        for i in range(n):
            queue.append(body(i))
    ids = []
    with Timer() as con:
        while queue:
            ids.append(json.loads(queue.popleft())["id"])
    return Phases(pub.seconds, con.seconds, ids)


class NoOpProcess:
    """A ``pashq_process`` wrapper that does nothing but yield."""

    @pashq.hookimpl(wrapper=True)
    def pashq_process(self, delivery: pashq.Delivery) -> Generator[None, Any, Any]:
        return (yield)


def _pashq(n: int, concurrency: int, plugin: object | None = None) -> Phases:
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    connection = pashq.queue()
    if plugin is not None:
        connection.plugin_manager.register(plugin)
    messages = [InvoicePaid(**payload(i)) for i in range(n)]  # type: ignore[arg-type]
    with Timer() as pub:
        connection.dispatch_many("bench", messages)
    worker = pashq.Worker("bench", concurrency=concurrency, poll_timeout=0.05)
    with Timer() as con:
        worker.run(until_empty=True)
    return Phases(pub.seconds, con.seconds - 0.05, list(consumed))


def pashq_memory(n: int) -> Phases:
    return _pashq(n, 1)


def pashq_memory_threads(n: int) -> Phases:
    return _pashq(n, 4)


def pashq_memory_process_wrapper(n: int) -> Phases:
    return _pashq(n, 1, NoOpProcess())


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def flat_rss(total: int, chunk: int = 10_000) -> None:
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    connection = pashq.queue()
    worker = pashq.Worker("bench", poll_timeout=0.01)
    samples = []
    done = 0
    while done < total:
        connection.dispatch_many(
            "bench",
            (InvoicePaid(**payload(i)) for i in range(done, done + chunk)),  # type: ignore[arg-type]
        )
        worker.run(until_empty=True)
        consumed.clear()
        done += chunk
        if done % (total // 10) == 0:
            samples.append((done, _rss_mb()))
            print(f"{done:>10,} messages  RSS {samples[-1][1]:.1f} MB", flush=True)
    growth = samples[-1][1] - samples[0][1]
    print(f"RSS growth from {samples[0][0]:,} to {done:,} messages: {growth:+.1f} MB")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--flat-rss":
        flat_rss(int(sys.argv[2]))
    else:
        main(
            {
                "raw deque + json (floor)": raw_deque,
                "pashq memory": pashq_memory,
                "pashq memory, 4 threads": pashq_memory_threads,
                "pashq memory, no-op process wrapper": pashq_memory_process_wrapper,
            },
            default_n=20_000,
            title="pashq core overhead on the memory driver",
        )

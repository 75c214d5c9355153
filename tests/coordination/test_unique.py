"""Unique messages across processes, on every backend (database ones are their own
coordination store; RabbitMQ and SQS use a PostgreSQL connection)."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pashq
from pashq.testing import wait_for

from .conftest import App

sys.path.insert(0, str(Path(__file__).parent))

import coordination_messages


def _finish(process: object, timeout: float = 300.0) -> str:
    out, err = process.communicate(timeout=timeout)  # type: ignore[attr-defined]
    assert process.returncode == 0, err  # type: ignore[attr-defined]
    return str(out)


def _count_queued(connection: pashq.Connection, queue: str, quiet: float = 3.0) -> list[str]:
    """Pull (and ack) until nothing arrives for ``quiet`` seconds; return the ids."""
    ids: list[str] = []
    last = time.monotonic()
    while time.monotonic() - last < quiet:
        got = connection.hook.pashq_pull(queue=queue, max_messages=10, timeout=0.5)
        if got:
            connection.hook.pashq_ack(queue=queue, deliveries=got)
            ids.extend(d.id for d in got)
            last = time.monotonic()
    return ids


def test_four_processes_dispatching_one_key_1000_times_queue_one_message(app: App) -> None:
    """4 processes dispatch the same unique message 250 times each, all at once: every
    dispatch answers the same id and the queue holds exactly one message."""
    queue = app.queue("unique")
    account = random.randrange(10**9)  # keys are per store, not per queue: a fresh one
    go = app.tmp / "go"
    outs = [app.tmp / f"ids-{i}.txt" for i in range(4)]
    processes = [
        app.spawn("dispatch", queue, str(go), "250", str(account), str(out)) for out in outs
    ]
    time.sleep(0.5)  # let them import; the GO file starts them together
    go.touch()
    for process in processes:
        _finish(process)
    ids = [line for out in outs for line in out.read_text().split()]
    assert len(ids) == 1000
    assert len(set(ids)) == 1
    pashq.configure(app.config)
    connection = pashq.queue("main")
    assert _count_queued(connection, queue) == [ids[0]]


def test_key_is_free_again_once_the_message_is_acked(app: App) -> None:
    """While the message waits, dispatch answers its id; after a worker (another process)
    acked it, the next dispatch queues a new message."""
    pashq.configure(app.config)
    connection = pashq.queue("main")
    queue = app.queue("unique-ack")
    account = random.randrange(10**9)
    first = connection.dispatch(queue, coordination_messages.SyncAccount(account))
    assert connection.dispatch(queue, coordination_messages.SyncAccount(account)) == first
    other = connection.dispatch(queue, coordination_messages.SyncAccount(account + 1))
    assert other != first
    stop = app.tmp / "stop"
    worker = app.spawn("work", queue, str(stop), "2")
    try:
        wait_for(lambda: len(app.events()) == 2, timeout=60, what="the worker to run both")
        again = wait_for(
            lambda: (
                (got := connection.dispatch(queue, coordination_messages.SyncAccount(account)))
                != first
                and got
            ),
            timeout=30,
            what="the key to be released after the ack",
        )
        assert again != first
    finally:
        stop.touch()
        _finish(worker, 60)


def test_dispatch_many_reports_duplicates(app: App) -> None:
    """``dispatch_many`` answers the holder's id for a duplicate and lists its position."""
    pashq.configure(app.config)
    connection = pashq.queue("main")
    queue = app.queue("unique-many")
    a, b = random.randrange(10**9), random.randrange(10**9)
    ids = connection.dispatch_many(
        queue,
        [
            coordination_messages.SyncAccount(a),
            coordination_messages.SyncAccount(b),
            coordination_messages.SyncAccount(a),
        ],
    )
    assert ids[0] == ids[2] != ids[1]
    assert ids.duplicates == (2,)  # type: ignore[attr-defined]
    assert sorted(_count_queued(connection, queue)) == sorted(ids[:2])

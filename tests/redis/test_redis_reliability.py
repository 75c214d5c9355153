"""Reliability with real ``pashq work`` processes: SIGKILL mid-drain, four workers at once,
and a Redis server killed with ``kill -9`` and restarted while a worker idles or drains.

The restart tests use a private ``redis-server`` (``appendonly yes``, ``appendfsync
always``) on a free port, never the shared one.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_servers import PrivateRedis
from redis_test_messages import RedisTick

from pashq.connection import Connection
from pashq.errors import DriverError
from pashq.testing import drain, make_connection, wait_for

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
COUNT = 3000


class Workers:
    """Starts ``pashq work`` subprocesses on one config and reads what they recorded."""

    def __init__(self, tmp_path: Path, table: dict[str, Any], queue: str) -> None:
        self.dir = tmp_path
        self.out = tmp_path / "out"
        self.out.mkdir(exist_ok=True)
        self.queue = queue
        self.config = tmp_path / "pashq.toml"
        self.config.write_text(
            "[queues.default]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()),
            encoding="utf-8",
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, sleep: float = 0.0) -> subprocess.Popen[bytes]:
        """Start one ``pashq work`` process on the queue."""
        env = dict(os.environ)
        env.update(
            PASHQ_TEST_OUT=str(self.out),
            PASHQ_TEST_SLEEP=str(sleep),
            PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        )
        log = (self.dir / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pashq", "work", self.queue, "--config", str(self.config),
             "--import", "redis_test_messages", "--poll-timeout", "0.5", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        """The end of every worker's log."""
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
            for p in sorted(self.dir.glob("worker-*.log"))
        )

    def wait(self, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
        """Wait for a worker to exit with status 0."""
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"worker did not finish in {timeout}s\n{self.logs()}") from None
        assert code == 0, f"worker exited with {code}\n{self.logs()}"

    def seen(self, pid: int | None = None) -> collections.Counter[int]:
        """How often each number was processed (by one process, or by all)."""
        counts: collections.Counter[int] = collections.Counter()
        files = [self.out / f"{pid}.txt"] if pid else list(self.out.glob("*.txt"))
        for path in files:
            if path.exists():
                counts.update(int(line) for line in path.read_text().split())
        return counts

    def stop_all(self) -> None:
        """SIGKILL whatever still runs."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers_for(tmp_path: Path) -> Iterator[Any]:
    made: list[Workers] = []

    def build(table: dict[str, Any], queue: str) -> Workers:
        workers = Workers(tmp_path, table, queue)
        made.append(workers)
        return workers

    yield build
    for workers in made:
        workers.stop_all()


def _empty(connection: Connection, queue: str) -> bool:
    stats = connection.stats(queue)
    return (stats.ready, stats.delayed, stats.in_flight) == (0, 0, 0)


def test_sigkilled_worker_loses_nothing(
    connection: Connection, redis_table: dict[str, Any], queue_name: str, workers_for: Any
) -> None:
    """3,000 messages, two workers, one SIGKILLed mid-drain; then another worker runs until
    empty: every id was processed at least once, nothing is left or dead-lettered."""
    workers = workers_for(redis_table, queue_name)
    connection.dispatch_many(queue_name, [RedisTick(n) for n in range(COUNT)])
    victim = workers.start("--batch-size", "50", sleep=0.002)
    survivor = workers.start("--batch-size", "50", "--until-empty", sleep=0.002)
    wait_for(
        lambda: sum(workers.seen(victim.pid).values()) >= 200,
        timeout=60,
        what="the victim to process 200 messages",
    )
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    workers.wait(survivor)
    # The victim's leased messages come back when their 2 s lease ends.
    wait_for(lambda: connection.stats(queue_name).in_flight == 0, timeout=30)
    workers.wait(workers.start("--until-empty"))
    seen = workers.seen()
    assert set(seen) == set(range(COUNT)), f"lost: {sorted(set(range(COUNT)) - set(seen))[:20]}"
    assert _empty(connection, queue_name)
    assert connection.failed(queue_name) == []


def test_four_workers_process_every_message_exactly_once(
    connection: Connection, redis_table: dict[str, Any], queue_name: str, workers_for: Any
) -> None:
    """Four concurrent workers, no faults: each message processed exactly once."""
    table = dict(redis_table, lease=30.0)
    workers = workers_for(table, queue_name)
    connection.dispatch_many(queue_name, [RedisTick(n) for n in range(COUNT)])
    procs = [workers.start("--batch-size", "100", "--until-empty", sleep=0.002) for _ in range(4)]
    for proc in procs:
        workers.wait(proc)
    assert _empty(connection, queue_name)
    seen = workers.seen()
    assert set(seen) == set(range(COUNT))
    duplicates = {n: c for n, c in seen.items() if c > 1}
    assert not duplicates, f"{len(duplicates)} processed more than once"
    assert sum(1 for p in workers.out.glob("*.txt") if p.stat().st_size) >= 2


def _private_table(server: PrivateRedis, key_prefix: str) -> dict[str, Any]:
    return {
        "type": "redis",
        "url": server.url,
        "key_prefix": key_prefix,
        "lease": 2.0,
        "socket_timeout": 3.0,
        "socket_connect_timeout": 1.0,
    }


def test_redis_restart_while_idle_worker_reconnects(
    private_redis: PrivateRedis, key_prefix: str, queue_name: str, workers_for: Any
) -> None:
    """Redis is killed (``kill -9``) and restarted while a worker waits on an empty queue:
    the worker reconnects by itself and processes what is dispatched afterwards."""
    table = _private_table(private_redis, key_prefix)
    workers = workers_for(table, queue_name)
    conn = make_connection(table)
    try:
        conn.dispatch_many(queue_name, [RedisTick(n) for n in range(10)])
        worker = workers.start()
        wait_for(lambda: len(workers.seen()) == 10, timeout=60, what="the first 10")
        private_redis.restart(down=1.0)
        conn.dispatch_many(queue_name, [RedisTick(n) for n in range(10, 110)])
        wait_for(lambda: len(workers.seen()) == 110, timeout=90, what="all 110 after restart")
        assert worker.poll() is None, workers.logs()
        wait_for(lambda: _empty(conn, queue_name), timeout=30, what="an empty queue")
    finally:
        conn.close()


def test_redis_restart_while_draining_loses_nothing_confirmed(
    private_redis: PrivateRedis, key_prefix: str, queue_name: str, workers_for: Any
) -> None:
    """Redis (``appendonly yes``, ``appendfsync always``) is killed with ``kill -9`` while a
    worker drains 3,000 messages and restarted two seconds later: the worker reconnects,
    every dispatched message is processed, and the queue ends empty."""
    table = _private_table(private_redis, key_prefix)
    workers = workers_for(table, queue_name)
    conn = make_connection(table)
    try:
        conn.dispatch_many(queue_name, [RedisTick(n) for n in range(COUNT)])
        worker = workers.start("--batch-size", "50", sleep=0.002)
        wait_for(lambda: len(workers.seen()) >= 300, timeout=60, what="300 processed")
        private_redis.restart(down=2.0)
        wait_for(
            lambda: set(workers.seen()) == set(range(COUNT)),
            timeout=150,
            what="every message processed after the restart",
        )
        assert worker.poll() is None, workers.logs()
        wait_for(lambda: _empty(conn, queue_name), timeout=30, what="an empty queue")
        assert conn.failed(queue_name) == []
    finally:
        conn.close()


def test_redis_restart_during_dispatch_loses_no_confirmed_message(
    private_redis: PrivateRedis, key_prefix: str, queue_name: str
) -> None:
    """A producer dispatches in a loop while Redis (``appendfsync always``) is killed with
    ``kill -9`` and restarted: every id a ``dispatch()`` returned is delivered afterwards
    (dispatches that raised may or may not be stored: at-least-once)."""
    table = _private_table(private_redis, key_prefix)
    producer = make_connection(table)
    confirmed: list[str] = []
    failures: list[str] = []
    done = threading.Event()

    def produce() -> None:
        n = 0
        while not done.is_set():
            try:
                confirmed.append(producer.dispatch(queue_name, RedisTick(n)))
            except DriverError as exc:
                failures.append(str(exc))
                time.sleep(0.05)
            n += 1

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        wait_for(lambda: len(confirmed) >= 200, timeout=60, what="200 confirmed dispatches")
        private_redis.restart(down=1.0)
        count = len(confirmed)
        wait_for(lambda: len(confirmed) >= count + 200, timeout=60, what="dispatches again")
    finally:
        done.set()
        thread.join(30)
    assert failures, "the restart should have failed some dispatches"
    consumer = make_connection(table)
    try:
        missing = set(confirmed)
        deadline = time.monotonic() + 120
        while missing and time.monotonic() < deadline:  # duplicates may arrive too
            missing -= {d.id for d in drain(consumer, queue_name, 500, timeout=2.0)}
        assert not missing, f"{len(missing)} confirmed message(s) lost"
    finally:
        consumer.close()
        producer.close()

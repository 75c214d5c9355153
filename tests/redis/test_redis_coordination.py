"""Redis as a coordination store: the coordination and defer contracts, unique messages,
rate limits and concurrency caps across real processes, and a RabbitMQ application that
borrows Redis with ``coordination = "<redis connection>"``."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
from redis_coordination_messages import RedisCapped, RedisRated, RedisUnique

import pashq
from pashq.testing import (
    CoordinationContract,
    DeferContract,
    QueueUnderTest,
    drain,
    make_connection,
    wait_for,
)

HERE = Path(__file__).parent
APP = HERE / "redis_coordination_app.py"
RABBITMQ_URL = os.environ.get("PASHQ_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
#: Seconds between a start's admission and the line its handler records, on a loaded
#: machine: counting starts in windows this much shorter than the period is sound.
_SLACK = 0.1


class TestRedisCoordinationContract(CoordinationContract, DeferContract):
    """Holds, sliding windows and defer on the shared Redis."""

    @pytest.fixture
    def queue_under_test(self, redis_table: dict[str, Any]) -> Iterator[QueueUnderTest]:
        connection = make_connection(redis_table)
        name = f"coord-{uuid.uuid4().hex[:8]}"
        yield QueueUnderTest(connection, name, lease=redis_table["lease"])
        with contextlib.suppress(Exception):
            connection.driver.delete_queue(name)  # type: ignore[attr-defined]
        connection.close()


class App:
    """An application config in a file, and the processes that run it."""

    def __init__(self, tmp: Path, queues: dict[str, Any]) -> None:
        self.tmp = tmp
        self.config = {"imports": ["redis_coordination_messages"], "queues": queues}
        self.path = tmp / "config.json"
        self.path.write_text(json.dumps(self.config))
        self.record = tmp / "record.txt"
        self.env = {
            **os.environ,
            "PASHQ_TEST_RECORD": str(self.record),
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, mode: str, *args: str) -> subprocess.Popen[str]:
        """Start one process of ``redis_coordination_app.py``."""
        proc = subprocess.Popen(
            [sys.executable, str(APP), mode, str(self.path), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.tmp,
        )
        self.procs.append(proc)
        return proc

    def events(self, kind: str = "start") -> list[tuple[float, str]]:
        """``(time, message id)`` of the recorded events of ``kind``, in time order."""
        if not self.record.exists():
            return []
        found = []
        for line in self.record.read_text().splitlines():
            event, at, _pid, mid = line.split()
            if event == kind:
                found.append((float(at), mid))
        return sorted(found)

    def workers(self, queue: str, stop: Path, count: int = 4) -> list[subprocess.Popen[str]]:
        """``count`` worker processes of 4 threads on ``main``/``queue``."""
        return [self.spawn("work", queue, str(stop), "4") for _ in range(count)]

    def stop(self, workers: list[subprocess.Popen[str]], stop: Path) -> list[dict[str, Any]]:
        """Stop the workers; their stats."""
        stop.touch()
        stats = []
        for proc in workers:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            stats.append(json.loads(out.strip().splitlines()[-1]))
        return stats

    def check_alive(self, workers: list[subprocess.Popen[str]]) -> None:
        """Fail at once, with its error output, when a worker died."""
        for proc in workers:
            if proc.poll() is not None:
                _, err = proc.communicate()
                raise AssertionError(f"worker exited with {proc.returncode}:\n{err[-3000:]}")

    def kill_all(self) -> None:
        """Kill what still runs."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@pytest.fixture
def redis_app(tmp_path: Path, redis_table: dict[str, Any]) -> Iterator[App]:
    """An application whose ``main`` connection is the shared Redis (its own store)."""
    app = App(tmp_path, {"main": dict(redis_table, lease=5.0)})
    yield app
    app.kill_all()


def _most_in_window(times: list[float], window: float) -> int:
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_unique_message_is_queued_once_across_processes(redis_app: App) -> None:
    """Four processes dispatch the same unique message five times each, at once: one is
    queued, and every dispatch returns its id."""
    queue = f"unique-{uuid.uuid4().hex[:8]}"
    go = redis_app.tmp / "go"
    outs = [redis_app.tmp / f"ids-{i}.txt" for i in range(4)]
    procs = [redis_app.spawn("dispatch", queue, str(go), "5", "42", str(o)) for o in outs]
    time.sleep(0.5)  # let them import and connect: the race is the dispatches below
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    ids = {line for o in outs for line in o.read_text().split()}
    assert len(ids) == 1
    pashq.configure(redis_app.config)
    connection = pashq.queue("main")
    got = drain(connection, queue, 1)
    assert [d.id for d in got] == list(ids)
    assert drain(connection, queue, 1, timeout=1.0) == []
    assert connection.dispatch(queue, RedisUnique(7)) != next(iter(ids))  # another key
    connection.driver.delete_queue(queue)  # type: ignore[attr-defined]


def test_rate_limit_holds_across_four_workers(redis_app: App) -> None:
    """``rate_limit="40/s"``: four workers of four threads run 240 messages, each once,
    never more than 40 starts in a second; deferred ones keep their attempt count."""
    pashq.configure(redis_app.config)
    connection = pashq.queue("main")
    queue = f"rate-{uuid.uuid4().hex[:8]}"
    stop = redis_app.tmp / "stop"
    connection.dispatch_many(queue, [RedisRated(n) for n in range(240)])
    workers = redis_app.workers(queue, stop)
    try:
        wait_for(
            lambda: (
                redis_app.check_alive(workers) or len({m for _, m in redis_app.events()}) >= 240
            ),
            timeout=180,
            interval=0.2,
            what="240 messages started",
        )
    finally:
        stats = redis_app.stop(workers, stop)
    starts = redis_app.events()
    times = [at for at, _ in starts]
    assert len(starts) == 240 and len({mid for _, mid in starts}) == 240
    assert _most_in_window(times, 1.0 - _SLACK) <= 40
    assert times[-1] - times[0] >= 5.0 - _SLACK  # 240 at 40/s: at least five more seconds
    assert sum(s["dead_lettered"] for s in stats) == 0
    assert connection.failed(queue) == []
    connection.driver.delete_queue(queue)  # type: ignore[attr-defined]


def test_concurrency_cap_holds_across_four_workers(redis_app: App) -> None:
    """``max_concurrency=2``: four workers of four threads never run more than two
    handlers at once, and run every message once."""
    pashq.configure(redis_app.config)
    connection = pashq.queue("main")
    queue = f"cap-{uuid.uuid4().hex[:8]}"
    stop = redis_app.tmp / "stop"
    connection.dispatch_many(queue, [RedisCapped(n) for n in range(60)])
    workers = redis_app.workers(queue, stop)
    try:
        wait_for(
            lambda: redis_app.check_alive(workers) or len(redis_app.events("end")) >= 60,
            timeout=180,
            interval=0.2,
            what="60 messages finished",
        )
    finally:
        redis_app.stop(workers, stop)
    edges = [(at, 1) for at, _ in redis_app.events("start")]
    edges += [(at, -1) for at, _ in redis_app.events("end")]
    running = most = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        running += step
        most = max(most, running)
    assert most <= 2
    assert len({mid for _, mid in redis_app.events("start")}) == 60
    connection.driver.delete_queue(queue)  # type: ignore[attr-defined]


def test_rabbitmq_application_borrows_redis_for_unique_messages(
    tmp_path: Path, redis_table: dict[str, Any]
) -> None:
    """``coordination = "locks"`` on a RabbitMQ connection, ``locks`` being Redis: a unique
    message dispatched twice is queued once on RabbitMQ."""
    queue = f"borrow-{uuid.uuid4().hex[:8]}"
    pashq.configure(
        {
            "queues": {
                "main": {"type": "rabbitmq", "url": RABBITMQ_URL, "coordination": "locks"},
                "locks": dict(redis_table),
            }
        }
    )
    try:
        connection = pashq.queue("main")
        first = connection.dispatch(queue, RedisUnique(99))
        assert connection.dispatch(queue, RedisUnique(99)) == first
        got = drain(connection, queue, 1)
        assert [d.id for d in got] == [first]
        assert drain(connection, queue, 1, timeout=1.0) == []
    finally:
        pashq.close()
        broker = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        for name in (queue, f"{queue}.failed"):
            with contextlib.suppress(Exception):
                broker.channel().queue_delete(name)
        broker.close()

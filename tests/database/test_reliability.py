"""Reliability with real ``pashq work`` processes on real servers: SIGKILL mid-drain,
concurrent workers, poison rows, a PostgreSQL restart."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pashq.connection import Connection
from pashq.testing import wait_for
from pashq_database import DatabaseDriver

from .conftest import BACKENDS, SERVER_BACKENDS, Backends, require_server
from .database_test_messages import Tick

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
PG_CTL = ["pg_ctlcluster", "--skip-systemctl-redirect"]
COUNT = 3000


class Workers:
    """Starts ``pashq work`` subprocesses on one config and reads what they recorded."""

    def __init__(self, tmp_path: Path, table: dict[str, Any], queue: str) -> None:
        self.dir = tmp_path
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.queue = queue
        self.config = tmp_path / "pashq.toml"
        self.config.write_text(
            "[queues.default]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items()),
            encoding="utf-8",
        )
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, sleep: float = 0.0) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.update(
            PASHQ_TEST_OUT=str(self.out),
            PASHQ_TEST_SLEEP=str(sleep),
            PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        )
        log = (self.dir / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pashq",
                "work",
                self.queue,
                "--config",
                str(self.config),
                "--import",
                "database_test_messages",
                "--poll-timeout",
                "0.5",
                *args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
            for p in sorted(self.dir.glob("worker-*.log"))
        )

    def wait(self, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"worker did not finish in {timeout}s\n{self.logs()}") from None
        assert code == 0, f"worker exited with {code}\n{self.logs()}"

    def seen(self, pid: int | None = None) -> collections.Counter[int]:
        counts: collections.Counter[int] = collections.Counter()
        files = [self.out / f"{pid}.txt"] if pid else list(self.out.glob("*.txt"))
        for path in files:
            if path.exists():
                counts.update(int(line) for line in path.read_text().split())
        return counts

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers_for(tmp_path: Path, backends: Backends) -> Iterator[Any]:
    made: list[Workers] = []

    def build(backend: str, queue: str, **extra: Any) -> Workers:
        table = backends.table(backend, **extra)
        workers = Workers(tmp_path, table, queue)
        made.append(workers)
        return workers

    yield build
    for workers in made:
        workers.stop_all()


def _dispatch(connection: Connection, queue: str, count: int = COUNT) -> None:
    connection.dispatch_many(queue, [Tick(n) for n in range(count)])


def _empty(connection: Connection, queue: str) -> bool:
    stats = connection.stats(queue)
    return (stats.ready, stats.delayed, stats.in_flight) == (0, 0, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkilled_worker_loses_nothing(
    connection: Connection, backend: str, queue_name: str, workers_for: Any
) -> None:
    """3,000 messages, two workers, one SIGKILLed mid-drain; then another worker runs until
    empty: every id was processed at least once."""
    workers = workers_for(backend, queue_name)
    _dispatch(connection, queue_name)
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
    # The victim's claimed rows come back when their 2 s lease ends.
    wait_for(
        lambda: connection.stats(queue_name).in_flight == 0,
        timeout=30,
        what="the killed worker's leases to expire",
    )
    workers.wait(workers.start("--until-empty"))
    seen = workers.seen()
    assert set(seen) == set(range(COUNT)), f"lost: {sorted(set(range(COUNT)) - set(seen))[:20]}"
    assert _empty(connection, queue_name)
    assert connection.failed(queue_name) == []


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_four_workers_process_every_message_exactly_once(
    connection: Connection, backend: str, queue_name: str, workers_for: Any
) -> None:
    """SKIP LOCKED claims: four concurrent workers, no faults, no duplicates."""
    workers = workers_for(backend, queue_name)
    _dispatch(connection, queue_name)
    procs = [workers.start("--batch-size", "100", "--until-empty", sleep=0.002) for _ in range(4)]
    for proc in procs:
        workers.wait(proc)
    wait_for(lambda: _empty(connection, queue_name), timeout=30, what="an empty queue")
    seen = workers.seen()
    assert set(seen) == set(range(COUNT))
    duplicates = {n: c for n, c in seen.items() if c > 1}
    assert not duplicates, f"{len(duplicates)} processed more than once"
    assert sum(1 for p in workers.out.glob("*.txt") if p.stat().st_size) >= 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_poison_rows_are_dead_lettered_and_work_goes_on(
    connection: Connection, backend: str, queue_name: str, workers_for: Any
) -> None:
    """Rows written by hand with a corrupt envelope or an unknown type are dead-lettered
    with the reason; the good messages around them are processed."""
    workers = workers_for(backend, queue_name)
    driver = connection.driver
    assert isinstance(driver, DatabaseDriver)
    connection.dispatch_many(queue_name, [Tick(n) for n in range(5)])
    unknown = {
        "v": 1,
        "id": uuid.uuid4().hex,
        "type": "nobody.knows.me",
        "body": {},
        "created_at": "2026-11-27T18:00:00.000000Z",
        "headers": {},
    }
    now = time.time()
    row = {"queue": queue_name, "attempts": 0, "available_at": now, "created_at": now}
    with driver.engine.begin() as conn:  # a plain INSERT, as another program would write
        conn.execute(
            sa.insert(driver.schema.messages),
            [
                {**row, "message_id": "corrupt-1", "body": b"{not json"},
                {**row, "message_id": "corrupt-2", "body": b"\xff\xfe\x00"},
                {**row, "message_id": unknown["id"], "body": json.dumps(unknown).encode()},
            ],
        )
    connection.dispatch_many(queue_name, [Tick(n) for n in range(5, 10)])
    workers.wait(workers.start("--until-empty"))
    assert sorted(workers.seen()) == list(range(10))
    dead = {d.id: d.reason for d in connection.failed(queue_name)}
    assert set(dead) == {"corrupt-1", "corrupt-2", unknown["id"]}
    assert "undecodable envelope" in dead["corrupt-1"]
    assert "undecodable envelope" in dead["corrupt-2"]
    assert "nobody.knows.me" in dead[unknown["id"]]
    assert _empty(connection, queue_name)


# -- PostgreSQL restarts ---------------------------------------------------------------------


def _cluster() -> list[str]:
    versions = sorted(os.listdir("/etc/postgresql"))
    return [versions[-1], "main"]


@pytest.fixture
def restartable_postgresql(backends: Backends) -> Iterator[Any]:
    """Restarts PostgreSQL on demand; makes sure it runs again at the end, whatever happens.

    Only with ``PASHQ_TEST_RESTART_POSTGRESQL=1`` (``./dev tests`` and CI set it unless it
    is set otherwise): a restart breaks every other test running on a shared server.
    ``test_reconnect.py`` covers the same recovery through a TCP proxy without touching
    the server.
    """
    if os.environ.get("PASHQ_TEST_RESTART_POSTGRESQL") != "1":
        pytest.skip("restarts the PostgreSQL server: PASHQ_TEST_RESTART_POSTGRESQL is not 1")
    url = backends.url("postgresql")

    def restart() -> None:
        subprocess.run(
            [*PG_CTL, *_cluster(), "restart"], check=True, timeout=120, capture_output=True
        )

    try:
        yield restart
    finally:
        status = subprocess.run([*PG_CTL, *_cluster(), "status"], capture_output=True)
        if status.returncode != 0:
            subprocess.run([*PG_CTL, *_cluster(), "start"], capture_output=True, timeout=120)
        engine = sa.create_engine(url)
        try:

            def up() -> bool:
                try:
                    with engine.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                    return True
                except sa.exc.OperationalError:
                    return False

            wait_for(up, timeout=60, interval=0.5, what="PostgreSQL to accept connections")
        finally:
            engine.dispose()
        require_server("postgresql", url)


@pytest.mark.postgresql
def test_idle_worker_reconnects_after_postgresql_restart(
    backends: Backends, queue_name: str, workers_for: Any, restartable_postgresql: Any
) -> None:
    """A worker idling through a restart consumes what is dispatched afterwards."""
    workers = workers_for("postgresql", queue_name)
    connection = backends.connect("postgresql")
    try:
        worker = workers.start()
        connection.dispatch(queue_name, Tick(-1))
        wait_for(lambda: workers.seen()[-1] == 1, timeout=30, what="the worker to run")
        restartable_postgresql()
        _dispatch(connection, queue_name, 100)  # the pool reconnects (pre-ping)
        wait_for(
            lambda: set(range(100)) <= set(workers.seen()),
            timeout=60,
            what=f"the worker to resume after the restart\n{workers.logs()}",
        )
        assert worker.poll() is None, workers.logs()
        wait_for(lambda: _empty(connection, queue_name), timeout=30, what="an empty queue")
    finally:
        connection.close()


@pytest.mark.postgresql
def test_draining_worker_survives_postgresql_restart(
    backends: Backends, queue_name: str, workers_for: Any, restartable_postgresql: Any
) -> None:
    """A restart in the middle of a drain: the worker reconnects, nothing is lost."""
    workers = workers_for("postgresql", queue_name)
    connection = backends.connect("postgresql")
    try:
        _dispatch(connection, queue_name)
        worker = workers.start("--batch-size", "100", sleep=0.001)
        wait_for(
            lambda: sum(workers.seen().values()) >= 300,
            timeout=60,
            what="the worker to process 300 messages",
        )
        restartable_postgresql()
        wait_for(
            lambda: set(workers.seen()) == set(range(COUNT)),
            timeout=120,
            what=f"every message after the restart\n{workers.logs()}",
        )
        wait_for(lambda: _empty(connection, queue_name), timeout=30, what="an empty queue")
        assert worker.poll() is None, workers.logs()
    finally:
        connection.close()

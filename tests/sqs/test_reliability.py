"""Reliability on moto's SQS server with real worker processes and threads.

- a worker SIGKILLed mid-drain of 2,000 messages loses none of them;
- a handler that runs 3x the visibility timeout is not delivered twice (heartbeat);
- FIFO groups keep their order under a worker with handler threads;
- (native redrive after maxReceiveCount receives is in ``test_driver.py``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqs_worker_messages import Grouped, Numbered, Slow

from pashq import Connection, Worker, WorkerStats
from pashq.testing import wait_for

pytestmark = [pytest.mark.sqs, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
OpenSQS = Callable[..., Connection]
COUNT = 2_000


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def _config(path: Path, endpoint: str, visibility: int) -> Path:
    path.write_text(
        "[queues.default]\n"
        'type = "sqs"\n'
        f'endpoint_url = "{endpoint}"\n'
        'region = "us-east-1"\n'
        "create_queues = true\n"
        f"visibility_timeout = {visibility}\n"
        "wait_time = 1\n"
    )
    return path


def _worker_command(queue: str, config: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "pashq", "work", queue,
        "--config", str(config), "--import", "sqs_worker_messages", *extra,
    ]  # fmt: skip


def test_sigkilled_worker_loses_no_message_of_2000(
    open_sqs: OpenSQS, moto_endpoint: str, tmp_path: Path
) -> None:
    queue = f"kill-{uuid.uuid4().hex[:8]}"
    visibility = 5
    record = tmp_path / "processed.txt"
    config = _config(tmp_path / "pashq.toml", moto_endpoint, visibility)
    env = {
        **os.environ,
        "PASHQ_SQS_TEST_RECORD": str(record),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    conn = open_sqs(visibility_timeout=visibility)
    ids = conn.dispatch_many(queue, [Numbered(i) for i in range(COUNT)])
    assert len(ids) == COUNT

    with (tmp_path / "worker-1.log").open("wb") as log:
        first = subprocess.Popen(
            _worker_command(queue, config), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_for(
                lambda: len(_lines(record)) >= 300 or first.poll() is not None,
                timeout=240,
                interval=0.05,
                what="the first worker to process 300 messages",
            )
            assert first.poll() is None, "the first worker ended before it could be killed"
            first.send_signal(signal.SIGKILL)
        finally:
            if first.poll() is None:
                first.kill()
            first.wait()
    processed_at_kill = len(_lines(record))
    assert processed_at_kill < COUNT

    # What the killed worker held comes back once its visibility timeout passes.
    wait_for(
        lambda: conn.stats(queue).in_flight == 0,
        timeout=visibility + 60,
        interval=0.5,
        what="in-flight messages of the killed worker to come back",
    )
    second = subprocess.run(
        _worker_command(queue, config, "--until-empty"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=300,
    )
    assert second.returncode == 0, second.stdout.decode(errors="replace")[-3000:]

    processed = [int(line) for line in _lines(record)]
    missing = set(range(COUNT)) - set(processed)
    assert not missing, f"{len(missing)} message(s) lost, e.g. {sorted(missing)[:10]}"
    duplicates = len(processed) - COUNT
    # At-least-once: at most what the killed worker had pulled but not yet deleted.
    assert 0 <= duplicates <= 20, duplicates
    stats = conn.stats(queue)
    assert (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 0)


def test_handler_running_3x_the_visibility_timeout_is_not_delivered_twice(
    open_sqs: OpenSQS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "slow.txt"
    monkeypatch.setenv("PASHQ_SQS_TEST_RECORD", str(record))
    queue = f"slow-{uuid.uuid4().hex[:8]}"
    visibility = 3  # the heartbeat extends with 1.5 s to spare, enough on a loaded machine
    conn = open_sqs(visibility_timeout=visibility)
    conn.dispatch(queue, Slow("job", 3.0 * visibility))
    worker = Worker(queue, connection=conn, install_signal_handlers=False, poll_timeout=1.0)
    results: list[WorkerStats] = []
    thread = threading.Thread(target=lambda: results.append(worker.run(until_empty=True)))
    thread.start()
    stolen: list[Any] = []
    other = open_sqs(visibility_timeout=visibility)
    try:
        wait_for(lambda: "start job" in _lines(record), timeout=30, what="the handler to start")
        # Another consumer polls the whole time the handler runs: the heartbeat keeps the
        # message hidden from it.
        deadline = time.monotonic() + 60
        while thread.is_alive() and time.monotonic() < deadline:
            stolen += other.hook.pashq_pull(queue=queue, max_messages=10, timeout=1.0)
    finally:
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert stolen == []
    assert _lines(record) == ["start job", "end job"]
    assert results[0].acked == 1 and results[0].errors == 0
    stats = conn.stats(queue)
    assert (stats.ready, stats.in_flight) == (0, 0)


def _run_groups(open_sqs: OpenSQS, record: Path, concurrency: int) -> dict[str, list[int]]:
    queue = f"groups-{uuid.uuid4().hex[:8]}"
    conn = open_sqs(fifo=True, visibility_timeout=10)
    conn.dispatch_many(queue, [Grouped(group, n) for n in range(20) for group in "abc"])
    worker = Worker(queue, connection=conn, install_signal_handlers=False, concurrency=concurrency)
    assert worker.run(until_empty=True).acked == 60
    seen: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    for line in _lines(record):
        group, n = line.split(":")
        seen[group].append(int(n))
    return seen


def test_fifo_groups_are_processed_in_order(
    open_sqs: OpenSQS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "grouped.txt"
    monkeypatch.setenv("PASHQ_SQS_TEST_RECORD", str(record))
    assert _run_groups(open_sqs, record, 1) == {group: list(range(20)) for group in "abc"}


def test_fifo_groups_keep_their_order_with_handler_threads(
    open_sqs: OpenSQS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "grouped.txt"
    monkeypatch.setenv("PASHQ_SQS_TEST_RECORD", str(record))
    assert _run_groups(open_sqs, record, 3) == {group: list(range(20)) for group in "abc"}

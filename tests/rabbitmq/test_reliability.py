"""Reliability: killed workers, broker restarts, long handlers, interoperability."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pika
import pytest

import pashq
from pashq.connection import Connection
from pashq.errors import DriverError
from pashq.testing import wait_for

from .conftest import URL, rabbitmqctl, raw_connection, wait_for_broker
from .rabbitmq_test_messages import Recorded, seen

pytestmark = pytest.mark.rabbitmq
HERE = Path(__file__).parent


def _config(tmp_path: Path, **options: object) -> Path:
    lines = ["[queues.default]", 'type = "rabbitmq"', f'url = "{URL}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    path = tmp_path / "pashq.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _worker_process(queue: str, config: Path, record: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        PASHQ_TEST_RECORD=str(record),
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pashq",
            "work",
            queue,
            "--config",
            str(config),
            "--import",
            "rabbitmq_test_messages",
            "--json",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _recorded(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text(encoding="utf-8").split()]


def _restart_broker(pause: float = 1.0) -> None:
    """stop_app / start_app, always leaving the broker running and answering."""
    try:
        rabbitmqctl("stop_app")
        time.sleep(pause)  # an outage of a known length, not a wait for a condition
    finally:
        rabbitmqctl("start_app")
        wait_for_broker()


@pytest.mark.slow
def test_worker_killed_mid_drain_loses_nothing(
    connect: Callable[..., Connection], queue_name: str, tmp_path: Path
) -> None:
    """SIGKILL a worker while it drains 3,000 messages; a new worker processes the rest."""
    conn = connect()
    total = 3000
    for start in range(0, total, 500):
        conn.dispatch_many(
            queue_name, [Recorded("kill", n, 0.001) for n in range(start, start + 500)]
        )
    record = tmp_path / "record.txt"
    config = _config(tmp_path, prefetch=100)
    first = _worker_process(queue_name, config, record, "--until-empty")
    try:
        wait_for(
            lambda: len(_recorded(record)) >= 800 or first.poll() is not None,
            timeout=60,
            what="the first worker to process 800 messages",
        )
        assert first.poll() is None, first.communicate()[0].decode()
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    before = len(_recorded(record))
    assert before < total
    second = _worker_process(queue_name, config, record, "--until-empty")
    output, _ = second.communicate(timeout=180)
    assert second.returncode == 0, output.decode()
    processed = _recorded(record)
    assert set(processed) == set(range(total))
    # Only what the first worker had processed but not yet acked is seen twice.
    assert len(processed) - total <= 200
    assert conn.stats(queue_name).ready == 0


def test_handler_longer_than_heartbeat_completes_and_acks(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """With heartbeat = 2 s, a 6 s handler finishes, its ack is kept, no reconnection."""
    conn = connect(heartbeat=2)
    key = uuid.uuid4().hex
    conn.dispatch(queue_name, Recorded(key, 1, sleep=6.0))
    worker = pashq.Worker(
        queue_name, connection=conn, install_signal_handlers=False, max_messages=1
    )
    stats = worker.run()
    assert stats.acked == 1 and stats.errors == 0
    assert seen(key) == [1]
    link = conn.driver.link
    assert link.connections == 1 and link.ready
    # The ack reached the broker: after closing, nothing is requeued.
    conn.close()
    checker = connect()
    assert checker.stats(queue_name).ready == 0


@pytest.mark.slow
def test_broker_restart_while_publishing_loses_no_confirmed_message(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """Publish with confirms through stop_app/start_app: every confirmed id is kept."""
    conn = connect(publish_timeout=60, reconnect_delay_max=1.0)
    conn.hook.pashq_declare(queue=queue_name)
    confirmed: list[int] = []
    failures: list[str] = []
    stop = threading.Event()
    restarted = threading.Event()

    def publish() -> None:
        n = 0
        after_restart = 0
        while not stop.is_set() and after_restart < 20:
            batch = list(range(n, n + 50))
            n += 50
            try:
                conn.dispatch_many(queue_name, [Recorded("pub", i) for i in batch])
                confirmed.extend(batch)
            except DriverError as exc:
                failures.append(str(exc))
            if restarted.is_set():
                after_restart += 1

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        wait_for(lambda: len(confirmed) >= 1000, timeout=30, what="1000 confirmed messages")
        _restart_broker()
        restarted.set()
        thread.join(120)
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert conn.driver.link.connections >= 2
    reader = connect()
    got: set[int] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not set(confirmed) <= got:
        deliveries = reader.hook.pashq_pull(queue=queue_name, max_messages=100, timeout=1.0)
        got.update(json.loads(d.body)["body"]["n"] for d in deliveries)
        reader.hook.pashq_ack(queue=queue_name, deliveries=deliveries)
    missing = set(confirmed) - got
    assert not missing, f"{len(missing)} confirmed message(s) lost; failures: {failures[:3]}"


@pytest.mark.slow
def test_broker_restart_while_consuming_worker_resumes(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A worker consuming through stop_app/start_app reconnects and finishes the queue."""
    conn = connect(reconnect_delay_max=1.0)
    key = uuid.uuid4().hex
    total = 1500
    conn.dispatch_many(queue_name, [Recorded(key, n, 0.002) for n in range(total)])
    worker = pashq.Worker(
        queue_name, connection=conn, install_signal_handlers=False, poll_timeout=0.5
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        wait_for(lambda: len(seen(key)) >= 300, timeout=60, what="300 processed messages")
        _restart_broker()
        wait_for(
            lambda: set(seen(key)) == set(range(total)),
            timeout=120,
            what="every message processed after the restart",
        )
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert conn.driver.link.connections >= 2
    assert worker.stats.errors >= 1  # the outage was noticed and reported, not hidden
    assert wait_for(lambda: conn.stats(queue_name).ready == 0, timeout=30)


def test_pashq_message_is_read_by_plain_pika_as_the_envelope(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A plain pika consumer gets the JSON envelope and useful AMQP properties."""
    conn = connect()
    message_id = conn.dispatch(queue_name, Recorded("interop", 7))
    raw = raw_connection()
    try:
        channel = raw.channel()
        method, properties, body = channel.basic_get(queue_name, auto_ack=True)
    finally:
        raw.close()
    assert method is not None
    envelope = json.loads(body)
    assert envelope["v"] == 1 and envelope["id"] == message_id
    assert envelope["type"] == "pashq_rabbitmq_tests.recorded"
    assert envelope["body"] == {"key": "interop", "n": 7, "sleep": 0.0}
    assert set(envelope) == {"v", "id", "type", "body", "created_at", "headers"}
    assert properties.message_id == message_id
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.type == "pashq_rabbitmq_tests.recorded"


def test_envelope_published_by_plain_pika_is_processed_by_pashq_work(
    connect: Callable[..., Connection], queue_name: str, tmp_path: Path
) -> None:
    """`pashq work` processes an envelope that plain pika published (no properties)."""
    connect().hook.pashq_declare(queue=queue_name)
    envelope = {
        "v": 1,
        "id": uuid.uuid4().hex,
        "type": "pashq_rabbitmq_tests.recorded",
        "body": {"key": "interop", "n": 42},
        "created_at": "2026-11-27T18:00:00.000000Z",
        "headers": {},
    }
    raw = raw_connection()
    try:
        channel = raw.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "", queue_name, json.dumps(envelope).encode(), pika.BasicProperties(delivery_mode=2)
        )
    finally:
        raw.close()
    record = tmp_path / "record.txt"
    worker = _worker_process(queue_name, _config(tmp_path), record, "--until-empty")
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output.decode()
    assert _recorded(record) == [42]


@pytest.mark.slow
def test_outage_is_reported_not_hidden(connect: Callable[..., Connection], queue_name: str) -> None:
    """While the broker is down, a push past publish_timeout raises naming the ids, and
    a pull says no consumer is attached; both work again once it is back."""
    conn = connect(publish_timeout=2.0, reconnect_delay_max=1.0)
    conn.dispatch(queue_name, Recorded("outage", 0))
    conn.hook.pashq_pull(queue=queue_name, max_messages=10, timeout=1.0)
    try:
        rabbitmqctl("stop_app")
        wait_for(lambda: not conn.driver.link.ready, timeout=30, what="the link to notice")
        with pytest.raises(DriverError) as pushed:
            conn.dispatch(queue_name, Recorded("outage", 1))
        assert "did not confirm 1 message(s)" in str(pushed.value)
        with pytest.raises(DriverError) as pulled:
            conn.hook.pashq_pull(queue=queue_name, max_messages=10, timeout=0.5)
        assert queue_name in str(pulled.value)
    finally:
        rabbitmqctl("start_app")
        wait_for_broker()
    wait_for(lambda: conn.driver.link.ready, timeout=30, what="the link to reconnect")
    conn.dispatch(queue_name, Recorded("outage", 2))


@pytest.mark.slow
def test_blocked_broker_is_named_in_the_publish_error(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """Under a memory alarm RabbitMQ blocks publishers: the push times out saying so,
    and works again once the alarm clears."""
    conn = connect(publish_timeout=2.0)
    conn.dispatch(queue_name, Recorded("blocked", 0))
    try:
        rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
        with pytest.raises(DriverError) as caught:
            conn.dispatch(queue_name, Recorded("blocked", 1))
        assert "blocked publishing" in str(caught.value)
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", "0.4")
    wait_for(lambda: "blocked" not in conn.driver.link.status(), timeout=30)
    conn.dispatch(queue_name, Recorded("blocked", 2))


@pytest.mark.slow
def test_sigterm_hands_back_unstarted_messages_without_duplicates(
    connect: Callable[..., Connection], queue_name: str, tmp_path: Path
) -> None:
    """A worker stopped with SIGTERM finishes its message and releases the prefetched
    rest; a second worker processes those: every message exactly once."""
    conn = connect()
    total = 400
    conn.dispatch_many(queue_name, [Recorded("term", n, 0.005) for n in range(total)])
    record = tmp_path / "record.txt"
    config = _config(tmp_path, prefetch=100)
    first = _worker_process(queue_name, config, record)
    try:
        wait_for(lambda: len(_recorded(record)) >= 50, timeout=60, what="50 processed")
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=60)
        assert first.returncode == 0, output.decode()
    finally:
        if first.poll() is None:
            first.kill()
    assert len(_recorded(record)) < total
    second = _worker_process(queue_name, config, record, "--until-empty")
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0, output.decode()
    processed = _recorded(record)
    assert sorted(processed) == list(range(total))

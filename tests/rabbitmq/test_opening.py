"""A connection that closes while it is still opening: clear errors, no tracebacks."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pashq.connection import Connection
from pashq.errors import DriverError
from pashq.testing import make_connection

from .conftest import URL
from .rabbitmq_test_messages import Recorded

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def slams_the_door() -> Iterator[int]:
    """A local TCP server that accepts every connection and closes it at once."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                continue
            client.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    server.close()


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Tracebacks the driver logged, and any trace of pika's missing ``is_opening``.

    (pika logs its own socket errors with tracebacks at ERROR; that is pika's logger.)
    """
    found = [r.getMessage() for r in caplog.records if r.name.startswith("pashq") and r.exc_info]
    return found + (["is_opening"] if "is_opening" in caplog.text else [])


def test_broker_closing_during_handshake_is_a_driver_error_naming_the_url(
    slams_the_door: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that closes during the handshake: dispatch fails naming the address (no
    password), and closing the connection meanwhile logs no traceback."""
    caplog.set_level(logging.DEBUG)
    conn = make_connection(
        {
            "type": "rabbitmq",
            "url": f"amqp://app:s3cret@127.0.0.1:{slams_the_door}/%2F",
            "publish_timeout": 2.0,
            "reconnect_delay_max": 0.2,
        }
    )
    link = conn.driver.link
    try:
        with pytest.raises(DriverError) as caught:
            conn.dispatch("nowhere", Recorded("opening", 1))
        text = str(caught.value)
        assert f"127.0.0.1:{slams_the_door}" in text and "s3cret" not in text
    finally:
        conn.close()
    assert not link._thread.is_alive()
    assert _tracebacks(caplog) == []


def test_close_while_opening_logs_no_traceback(
    connect: Callable[..., Connection], caplog: pytest.LogCaptureFixture
) -> None:
    """`pashq stats` with an unreachable management_url closes the connection while it is
    still opening: the stats error is clear and the close is quiet."""
    caplog.set_level(logging.DEBUG)
    conn = connect(management_url="http://127.0.0.1:1")
    link = conn.driver.link
    with pytest.raises(DriverError, match=r"management API at http://127\.0\.0\.1:1"):
        conn.stats("any-queue")
    conn.close()
    assert not link._thread.is_alive()
    assert _tracebacks(caplog) == []


def test_stats_with_unreachable_management_url_prints_only_the_error(tmp_path: Path) -> None:
    """`pashq stats`: one line, the management API error; no pika traceback and no
    "cannot connect" for the connection pashq itself closed while it was opening."""
    (tmp_path / "pashq.toml").write_text(
        f'[queues.default]\ntype = "rabbitmq"\nurl = "{URL}"\n'
        'management_url = "http://127.0.0.1:1"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pashq", "stats", "any-queue"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error: cannot read queue 'any-queue' from the RabbitMQ management")

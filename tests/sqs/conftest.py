"""Fixtures for the SQS driver tests: moto's standalone server in its own process.

The server is started once per session on a free loopback port (moto's own
``moto.server.main`` through ``moto_launcher.py``, which only swaps in a faster clock);
boto3 talks HTTP to it through ``endpoint_url``. Dummy credentials and a
region are set in the environment so nothing can fall back to a real AWS account. If the
server does not come up, the tests fail (they never skip).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from pashq import Connection
from pashq.testing import make_connection

LAUNCHER = Path(__file__).with_name("moto_launcher.py")
PROXY = Path(__file__).with_name("keep_alive_proxy.py")
_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def aws_environment() -> Iterator[dict[str, str]]:
    """Dummy credentials and region for every test (and every subprocess it starts)."""
    saved = {k: os.environ.get(k) for k in (*_DUMMY_ENV, *_CLEARED_ENV)}
    os.environ.update(_DUMMY_ENV)
    for key in _CLEARED_ENV:
        os.environ.pop(key, None)
    yield dict(_DUMMY_ENV)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def _server(command: list[str], url: str, log_path: Path, what: str) -> Iterator[str]:
    """Run ``command`` until the test session ends; yield ``url`` once it answers."""
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"{what} exited with {process.returncode} before serving "
                    f"(log: {log_path}): {log_path.read_text(errors='replace')[-2000:]}\n"
                    "Install moto's server with: pip install 'moto[server]>=5'"
                )
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"{what} did not answer on {url} within 60 s (log: {log_path}); "
                        f"start it by hand with `{' '.join(command)}` to see why"
                    )
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def moto_endpoint(
    aws_environment: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Start ``python -m moto.server`` on a free 127.0.0.1 port; yield its URL."""
    port = _free_port()
    command = [sys.executable, str(LAUNCHER), "-H", "127.0.0.1", "-p", str(port)]
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with _server(command, f"http://127.0.0.1:{port}", log_path, "moto's server") as url:
        yield url


@pytest.fixture(scope="session")
def moto_keep_alive_endpoint(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The same moto server behind a proxy that keeps HTTP/1.1 connections open between
    requests, as SQS does (moto closes each one), so a socket shared by two processes
    shows (``keep_alive_proxy.py``)."""
    port = _free_port()
    command = [sys.executable, str(PROXY), str(port), moto_endpoint]
    log_path = tmp_path_factory.mktemp("moto") / "keep-alive-proxy.log"
    with _server(command, f"http://127.0.0.1:{port}", log_path, "the keep-alive proxy") as url:
        yield url


@pytest.fixture(scope="session")
def sqs_client(moto_endpoint: str) -> Any:
    """A raw boto3 SQS client on the moto server (for arranging and checking)."""
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=moto_endpoint)


@pytest.fixture
def sqs_table(moto_endpoint: str) -> dict[str, Any]:
    """The base ``[queues.<name>]`` table of a test connection (short visibility)."""
    return {
        "type": "sqs",
        "endpoint_url": moto_endpoint,
        "region": "us-east-1",
        "create_queues": True,
        "visibility_timeout": 2,
        "wait_time": 2,
    }


@pytest.fixture
def open_sqs(sqs_table: dict[str, Any]) -> Iterator[Callable[..., Connection]]:
    """Open connections from ``sqs_table`` plus overrides; all closed at teardown."""
    opened: list[Connection] = []

    def open_(**overrides: Any) -> Connection:
        connection = make_connection({**sqs_table, **overrides})
        opened.append(connection)
        return connection

    yield open_
    for connection in opened:
        connection.close()


@pytest.fixture
def queue_name() -> str:
    """A fresh standard queue name."""
    return f"t-{uuid.uuid4().hex[:10]}"

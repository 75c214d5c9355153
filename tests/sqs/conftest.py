"""Fixtures for the SQS driver tests: moto's standalone server in its own process.

The server is started once per session on a free loopback port (moto's own
``moto.server.main`` through ``moto_launcher.py``, which only swaps in a faster clock;
the starting and waiting live in ``tests/moto_server.py``, shared with tests/docs);
boto3 talks HTTP to it through ``endpoint_url``. Dummy credentials and a
region are set in the environment so nothing can fall back to a real AWS account. If the
server does not come up, the tests fail (they never skip).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from moto_server import CLEARED_ENV, DUMMY_ENV, PROXY, free_port, moto_command, serve

from pashq import Connection
from pashq.testing import make_connection


@pytest.fixture(scope="session", autouse=True)
def aws_environment() -> Iterator[dict[str, str]]:
    """Dummy credentials and region for every test (and every subprocess it starts)."""
    saved = {k: os.environ.get(k) for k in (*DUMMY_ENV, *CLEARED_ENV)}
    os.environ.update(DUMMY_ENV)
    for key in CLEARED_ENV:
        os.environ.pop(key, None)
    yield dict(DUMMY_ENV)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_endpoint(
    aws_environment: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Start ``python -m moto.server`` on a free 127.0.0.1 port; yield its URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    url = f"http://127.0.0.1:{port}"
    with serve(moto_command(port), url, log_path, "moto's server") as url:
        yield url


@pytest.fixture(scope="session")
def moto_keep_alive_endpoint(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The same moto server behind a proxy that keeps HTTP/1.1 connections open between
    requests, as SQS does (moto closes each one), so a socket shared by two processes
    shows (``keep_alive_proxy.py``)."""
    port = free_port()
    command = [sys.executable, str(PROXY), str(port), moto_endpoint]
    log_path = tmp_path_factory.mktemp("moto") / "keep-alive-proxy.log"
    with serve(command, f"http://127.0.0.1:{port}", log_path, "the keep-alive proxy") as url:
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

"""Fixtures for the Redis driver's tests: the shared Redis and private servers to kill.

The shared server's URL comes from ``PASHQ_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``); a server that does not answer fails the test with the
command that starts it (never a skip). Every test session uses its own random
``key_prefix`` and deletes its keys at the end, so parallel runs do not collide. Tests that
restart or kill Redis never touch the shared server: they start their own ``redis-server``
on a free port (:class:`PrivateRedis`), with ``appendonly yes`` in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_servers import PrivateRedis

from pashq.connection import Connection
from pashq.testing import make_connection

REDIS_URL = os.environ.get("PASHQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_HINT = (
    "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no "
    "(or run scripts/services)"
)
_reachable: list[bool] = []


def require_redis(url: str = REDIS_URL) -> None:
    """Fail (never skip) the test when the shared Redis does not answer."""
    if _reachable:
        return
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"Redis is not reachable at {url} ({type(exc).__name__}: {exc}).\n"
            f"Start it with:  {START_HINT}\nor point PASHQ_TEST_REDIS_URL at another server.",
            pytrace=False,
        )
    finally:
        client.close()
    _reachable.append(True)


@pytest.fixture(scope="session")
def key_prefix() -> Iterator[str]:
    """A key prefix unique to this test session; its keys are deleted at the end."""
    prefix = f"pashq-test-{uuid.uuid4().hex[:8]}:"
    yield prefix
    with contextlib.suppress(redis.RedisError):
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()


@pytest.fixture
def redis_table(key_prefix: str) -> dict[str, Any]:
    """A ``[queues.<name>]`` table for the shared Redis, with this session's prefix."""
    require_redis()
    return {"type": "redis", "url": REDIS_URL, "key_prefix": key_prefix, "lease": 2.0}


@pytest.fixture
def queue_name() -> str:
    """A fresh queue name."""
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def connection(redis_table: dict[str, Any], queue_name: str) -> Iterator[Connection]:
    """An open connection on the shared Redis; the test's queue is deleted afterwards."""
    conn = make_connection(redis_table)
    yield conn
    with contextlib.suppress(Exception):
        for name in (queue_name, f"{queue_name}-other"):
            conn.driver.delete_queue(name)  # type: ignore[attr-defined]
    conn.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A private Redis server with AOF on (killed at the end of the test)."""
    directory = tmp_path / "redis-data"
    directory.mkdir()
    server = PrivateRedis(directory)
    server.start()
    yield server
    server.kill()

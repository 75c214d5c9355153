"""The backends the browser tests run against, each isolated for one test.

SQLite: a file in a temporary directory. PostgreSQL: tables with a fresh prefix, dropped
afterwards. RabbitMQ: a vhost of its own (created and deleted through the management API),
so the listing shows only the test's queues.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import attrs
import pytest

import pashq

POSTGRESQL_URL = os.environ.get(
    "PASHQ_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
RABBITMQ_HOST = os.environ.get("PASHQ_TEST_RABBITMQ_HOST", "127.0.0.1")
MANAGEMENT_URL = os.environ.get("PASHQ_TEST_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")


@attrs.frozen
class Backend:
    """One backend: ``open()`` yields the pashq config of a fresh, empty instance of it."""

    id: str
    open: Callable[[], AbstractContextManager[dict[str, Any]]]


@contextmanager
def _sqlite() -> Iterator[dict[str, Any]]:
    folder = tempfile.mkdtemp(prefix="pashq-dashboard-")
    try:
        yield {"queues": {"default": {"type": "database", "url": f"sqlite:///{folder}/q.db"}}}
    finally:
        pashq.reset()
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _postgresql() -> Iterator[dict[str, Any]]:
    table = {
        "type": "database",
        "url": POSTGRESQL_URL,
        "table_prefix": f"dash_{uuid.uuid4().hex[:8]}_",
        "create_tables": True,
    }
    try:
        yield {"queues": {"default": table}}
    finally:
        pashq.reset()
        pashq.configure({"queues": {"default": table}})
        pashq.queue("default").driver.drop_tables()
        pashq.reset()


def _management(method: str, path: str, body: Any = None) -> None:
    token = base64.b64encode(b"guest:guest").decode()
    request = urllib.request.Request(
        f"{MANAGEMENT_URL}/api/{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30):
        pass


@contextmanager
def _rabbitmq() -> Iterator[dict[str, Any]]:
    vhost = f"pashq-dashboard-{uuid.uuid4().hex[:8]}"
    _management("PUT", f"vhosts/{vhost}", {})
    everything = {"configure": ".*", "write": ".*", "read": ".*"}
    _management("PUT", f"permissions/{vhost}/guest", everything)
    table = {
        "type": "rabbitmq",
        "url": f"amqp://guest:guest@{RABBITMQ_HOST}:5672/{vhost}",
        "management_url": MANAGEMENT_URL,
    }
    try:
        yield {"queues": {"default": table}}
    finally:
        pashq.reset()
        _management("DELETE", f"vhosts/{vhost}")


BACKENDS = [
    pytest.param(Backend("sqlite", _sqlite), id="sqlite"),
    pytest.param(Backend("postgresql", _postgresql), id="postgresql", marks=pytest.mark.postgresql),
    pytest.param(Backend("rabbitmq", _rabbitmq), id="rabbitmq", marks=pytest.mark.rabbitmq),
]

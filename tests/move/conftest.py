"""Fixtures for the ``pashq move`` tests: one config file naming a SQLite file, PostgreSQL,
RabbitMQ and SQS (moto) connection, and helpers that read a queue's ids without
consuming them.

moto's server comes from ``tests/sqs/conftest.py`` (loaded by path: its fixtures are
re-exported here). PostgreSQL tables get a prefix unique to the session and are dropped at
the end; RabbitMQ and SQS queues get unique names.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rabbitmq_broker import URL as RABBITMQ_URL
from rabbitmq_broker import delete_queues

from pashq.testing import make_connection

_SQS_CONFTEST = Path(__file__).parents[1] / "sqs" / "conftest.py"
_spec = importlib.util.spec_from_file_location("pashq_tests_sqs_fixtures", _SQS_CONFTEST)
assert _spec is not None and _spec.loader is not None
_sqs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sqs)
aws_environment = _sqs.aws_environment
moto_endpoint = _sqs.moto_endpoint
sqs_client = _sqs.sqs_client

POSTGRESQL_URL = os.environ.get(
    "PASHQ_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MANAGEMENT_URL = os.environ.get("PASHQ_TEST_RABBITMQ_MANAGEMENT_URL", "http://127.0.0.1:15672")


def _require(what: str, check: Any) -> None:
    try:
        check()
    except Exception as exc:
        pytest.fail(f"{what} is not reachable: {type(exc).__name__}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def pg_prefix() -> Iterator[str]:
    """A PostgreSQL table prefix for this session; its tables are dropped at the end."""
    engine = sa.create_engine(POSTGRESQL_URL)

    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    _require(f"PostgreSQL at {sa.make_url(POSTGRESQL_URL).host}", ping)
    prefix = f"mv{uuid.uuid4().hex[:8]}_"
    connection = make_connection(
        {"type": "database", "url": POSTGRESQL_URL, "table_prefix": prefix}
    )
    connection.driver.create_tables()
    yield prefix
    connection.driver.drop_tables()
    connection.close()
    engine.dispose()


@pytest.fixture
def rabbit_queues() -> Iterator[list[str]]:
    """Names of RabbitMQ queues a test used; they and their companions are deleted after."""
    names: list[str] = []
    yield names
    delete_queues(full for name in names for full in (name, f"{name}.failed"))


class Setup:
    """A config file with the connections ``lite``, ``lite2``, ``pg``, ``rabbit``, ``sqs``."""

    def __init__(self, root: Path, pg_prefix: str, moto: str) -> None:
        self.root = root
        self.sqlite_a = root / "a.sqlite3"
        self.sqlite_b = root / "b.sqlite3"
        self.config = root / "pashq.toml"
        self.tables: dict[str, dict[str, Any]] = {
            "lite": {"type": "database", "url": f"sqlite:///{self.sqlite_a}", "lease": 2.0},
            "lite2": {"type": "database", "url": f"sqlite:///{self.sqlite_b}", "lease": 2.0},
            "pg": {
                "type": "database",
                "url": POSTGRESQL_URL,
                "table_prefix": pg_prefix,
                "create_tables": True,
                "lease": 2.0,
            },
            "rabbit": {"type": "rabbitmq", "url": RABBITMQ_URL},
            "sqs": {
                "type": "sqs",
                "endpoint_url": moto,
                "region": "us-east-1",
                "create_queues": True,
                "visibility_timeout": 5,
                "wait_time": 1,
            },
        }
        lines: list[str] = []
        for name, table in self.tables.items():
            lines.append(f"[queues.{name}]")
            lines.extend(f"{key} = {json.dumps(value)}" for key, value in table.items())
            lines.append("")
        self.config.write_text("\n".join(lines))

    def connect(self, name: str) -> Any:
        """A connection of its own to ``[queues.<name>]``."""
        return make_connection(self.tables[name], name)

    def command(self, *args: str) -> list[str]:
        """The ``pashq move`` command line with this config."""
        return [sys.executable, "-m", "pashq", "move", "--config", str(self.config), *args]

    def move(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``pashq move ARGS --json`` in a subprocess."""
        done = subprocess.run(
            [*self.command(*args), "--json"],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=Path(__file__).parents[2],
        )
        if check:
            assert done.returncode == 0, done.stderr
        return done


@pytest.fixture
def setup(tmp_path: Path, pg_prefix: str, moto_endpoint: str) -> Setup:
    """The config file and connection tables of one test."""
    return Setup(tmp_path, pg_prefix, moto_endpoint)


def database_ids(url: str, prefix: str, queue: str, dead: bool = False) -> list[str]:
    """The message ids stored for ``queue`` in a database (waiting, or dead letters)."""
    table = f"{prefix}{'dead_letters' if dead else 'messages'}"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(f"SELECT message_id FROM {table} WHERE queue = :q"), {"q": queue}
            )
            return [r[0] for r in rows]
    finally:
        engine.dispose()


def rabbit_ids(queue: str, expected: int) -> list[str]:
    """The envelope ids of the ready messages of a RabbitMQ queue, read through the
    management API and requeued (the messages stay)."""
    request = urllib.request.Request(
        f"{MANAGEMENT_URL}/api/queues/%2F/{urllib.request.quote(queue, safe='')}/get",
        data=json.dumps(
            {"count": expected + 10, "ackmode": "ack_requeue_true", "encoding": "base64"}
        ).encode(),
        headers={
            "content-type": "application/json",
            "authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        got = json.loads(response.read())
    return [json.loads(base64.b64decode(m["payload"]))["id"] for m in got]


def sqs_count(client: Any, url: str) -> int:
    """Messages an SQS queue holds (visible, hidden and delayed), once the counts agree
    twice in a row (SQS's counts are approximate for a moment)."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    previous = -1
    for _ in range(50):
        attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=names)
        total = sum(int(attributes["Attributes"][n]) for n in names)
        if total == previous:
            return total
        previous = total
    return previous

"""Backends of the coordination tests, each an application config with connection ``main``.

- ``sqlite``, ``postgresql``, ``mariadb``: ``main`` is a database connection, its own
  coordination store (check and insert of a unique message in one transaction);
- ``rabbitmq``, ``sqs``: ``main`` is the broker with ``coordination = "db"``, ``db`` a
  PostgreSQL connection (SQS is moto's server, started here on a free port).

Servers that do not answer fail the tests (never skip). Tables use a random prefix and
are dropped at the end of the session; RabbitMQ queues are deleted after each test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pashq.testing import make_connection

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("scenario.py")
MOTO_LAUNCHER = ROOT / "tests" / "sqs" / "moto_launcher.py"
POSTGRESQL_URL = os.environ.get(
    "PASHQ_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("PASHQ_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
RABBITMQ_URL = os.environ.get("PASHQ_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
    pytest.param("rabbitmq", id="rabbitmq+postgresql"),
    pytest.param("sqs", id="sqs+postgresql"),
]


def _require(url: str, what: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        pytest.fail(f"{what} is not reachable ({type(exc).__name__}): start it", pytrace=False)
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session", autouse=True)
def _aws_environment() -> Iterator[None]:
    """Dummy AWS credentials for boto3 in the test process (moto accepts any)."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def prefix() -> str:
    """The session's table prefix."""
    return f"c{uuid.uuid4().hex[:8]}_"


@pytest.fixture(scope="session")
def used_databases(prefix: str) -> Iterator[set[str]]:
    """Database URLs the session used; their tables are dropped at the end."""
    used: set[str] = set()
    yield used
    for url in used:
        try:
            conn = make_connection({"type": "database", "url": url, "table_prefix": prefix})
            conn.driver.drop_tables()
            conn.close()
        except Exception as exc:
            print(f"could not drop {prefix}* in {url}: {exc}")


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's SQS server on a free loopback port (the SQS tests' launcher)."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    env = {**os.environ, **AWS_ENV}
    process = subprocess.Popen(
        [sys.executable, str(MOTO_LAUNCHER), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("moto's server did not start", pytrace=False)
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(10)
    log.close()


class App:
    """One backend's application config and what the test processes need."""

    def __init__(self, backend: str, config: dict[str, Any], tmp: Path) -> None:
        self.backend = backend
        self.config = config
        self.tmp = tmp
        self.path = tmp / "config.json"
        self.path.write_text(json.dumps(config))
        self.record = tmp / "record.txt"
        self.env = {**os.environ, **AWS_ENV, "PASHQ_TEST_RECORD": str(self.record)}
        self.queues: list[str] = []

    def queue(self, name: str) -> str:
        """A fresh queue name (deleted afterwards on RabbitMQ)."""
        found = f"{name}-{uuid.uuid4().hex[:8]}"
        self.queues.append(found)
        return found

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """Start ``scenario.py`` with ``args`` (after the mode, the config path)."""
        return subprocess.Popen(
            [sys.executable, str(SCENARIO), args[0], str(self.path), *args[1:]],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.tmp,
        )

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


@pytest.fixture(params=BACKENDS)
def app(
    request: pytest.FixtureRequest,
    prefix: str,
    used_databases: set[str],
    tmp_path: Path,
) -> Iterator[App]:
    """Each backend's application in turn."""
    backend: str = request.param

    def database(url: str) -> dict[str, Any]:
        if not url.startswith("sqlite"):
            _require(url, url.split(":")[0])
        used_databases.add(url)
        return {
            "type": "database",
            "url": url,
            "table_prefix": prefix,
            "create_tables": True,
            "lease": 5.0,
            "poll_interval": 0.1,
        }

    queues: dict[str, Any]
    if backend == "sqlite":
        queues = {"main": database(f"sqlite:///{tmp_path / 'app.sqlite3'}")}
    elif backend == "postgresql":
        queues = {"main": database(POSTGRESQL_URL)}
    elif backend == "mariadb":
        queues = {"main": database(MYSQL_URL)}
    elif backend == "rabbitmq":
        queues = {
            "main": {"type": "rabbitmq", "url": RABBITMQ_URL, "coordination": "db"},
            "db": database(POSTGRESQL_URL),
        }
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        queues = {
            "main": {
                "type": "sqs",
                "endpoint_url": endpoint,
                "region": "us-east-1",
                "create_queues": True,
                "visibility_timeout": 5,
                "wait_time": 1,
                "coordination": "db",
            },
            "db": database(POSTGRESQL_URL),
        }
    for table in queues.values():
        if table["type"] == "database":
            # Once here: four processes creating the tables at once race in the catalog.
            conn = make_connection(table)
            conn.driver.create_tables()
            conn.close()
    found = App(backend, {"imports": ["coordination_messages"], "queues": queues}, tmp_path)
    yield found
    if backend == "rabbitmq" and found.queues:
        _delete_rabbitmq_queues(found.queues)


def _delete_rabbitmq_queues(names: list[str]) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        for name in names:
            for queue in (name, f"{name}.failed"):
                channel = connection.channel()
                try:
                    channel.queue_delete(queue)
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker:
                    pass
    finally:
        connection.close()

"""Fixtures for the database driver's tests: real SQLite, PostgreSQL and MariaDB.

Server URLs come from ``PASHQ_TEST_POSTGRESQL_URL`` and ``PASHQ_TEST_MYSQL_URL``. A server
that does not answer fails the test with the command that starts it. Every test session
uses its own random table prefix and drops its tables at the end, so parallel runs do not
collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pashq.connection import Connection
from pashq.testing import make_connection

POSTGRESQL_URL = os.environ.get(
    "PASHQ_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("PASHQ_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
START_HINTS = {
    "postgresql": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "mariadb": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
}
ENV_NAMES = {"postgresql": "PASHQ_TEST_POSTGRESQL_URL", "mariadb": "PASHQ_TEST_MYSQL_URL"}

#: The backends, each with its pytest marker.
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", id="mariadb", marks=pytest.mark.mariadb),
]
SERVER_BACKENDS = BACKENDS[1:]

_reachable: dict[str, bool] = {}


def require_server(backend: str, url: str) -> None:
    """Fail (never skip) the test when the server does not answer."""
    if _reachable.get(backend):
        return
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        safe = sa.make_url(url).render_as_string(hide_password=True)
        pytest.fail(
            f"{backend} is not reachable at {safe} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}).\nStart it with:  {START_HINTS[backend]}\n"
            f"or point {ENV_NAMES[backend]} at another server.",
            pytrace=False,
        )
    finally:
        engine.dispose()
    _reachable[backend] = True


@pytest.fixture(scope="session")
def table_prefix() -> str:
    """A prefix unique to this test session."""
    return f"t{uuid.uuid4().hex[:8]}_"


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file for this session."""
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'pashq.sqlite3'}"


class Backends:
    """Builds connection tables per backend and drops every table it created at the end."""

    def __init__(self, sqlite_url: str, prefix: str) -> None:
        self.urls = {"sqlite": sqlite_url, "postgresql": POSTGRESQL_URL, "mariadb": MYSQL_URL}
        self.prefix = prefix
        self.used: set[tuple[str, str]] = set()

    def url(self, backend: str) -> str:
        url = self.urls[backend]
        if backend != "sqlite":
            require_server(backend, url)
        return url

    def table(self, backend: str, prefix: str | None = None, **extra: Any) -> dict[str, Any]:
        """A ``[queues.x]`` table for ``backend`` with short leases and polls."""
        prefix = prefix or self.prefix
        self.used.add((backend, prefix))
        table: dict[str, Any] = {
            "type": "database",
            "url": self.url(backend),
            "table_prefix": prefix,
            "create_tables": True,
            "lease": 2.0,
            "poll_interval": 0.2,
        }
        table.update(extra)
        return table

    def connect(self, backend: str, **extra: Any) -> Connection:
        return make_connection(self.table(backend, **extra))

    def cleanup(self) -> None:
        for backend, prefix in sorted(self.used):
            table = {"type": "database", "url": self.urls[backend], "table_prefix": prefix}
            try:
                conn = make_connection(table)
                conn.driver.drop_tables()
                conn.close()
            except Exception as exc:  # a server test already failed; do not mask it
                print(f"could not drop {prefix}* on {backend}: {exc}")


@pytest.fixture(scope="session")
def backends(sqlite_url: str, table_prefix: str) -> Iterator[Backends]:
    """The session's backends; tables are dropped at the end."""
    found = Backends(sqlite_url, table_prefix)
    yield found
    found.cleanup()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend in turn."""
    name: str = request.param
    return name


@pytest.fixture
def connection(backends: Backends, backend: str) -> Iterator[Connection]:
    """An open connection to ``backend`` with the session's tables."""
    conn = backends.connect(backend)
    yield conn
    conn.close()


@pytest.fixture
def queue_name() -> str:
    """A fresh queue name."""
    return f"q-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """A temporary directory for config files and markers."""
    return tmp_path

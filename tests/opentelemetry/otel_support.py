"""Helpers of the OpenTelemetry and observability tests: backend tables, config files and
``pashq work`` subprocesses (a module of its own, not conftest.py, so the tests can import
it by a name no other test directory uses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rabbitmq_broker import URL as RABBITMQ_URL
from rabbitmq_broker import delete_queues

from pashq.testing import make_connection

HERE = Path(__file__).parent
POSTGRESQL_URL = os.environ.get(
    "PASHQ_TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

#: The backends every cross-process test runs on, with the ``messaging.system`` expected.
BACKENDS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "rabbitmq": "rabbitmq",
    "sqs": "aws_sqs",
}


def _require_postgresql() -> None:
    engine = sa.create_engine(POSTGRESQL_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable ({type(exc).__name__}); start it or set "
            "PASHQ_TEST_POSTGRESQL_URL",
            pytrace=False,
        )
    finally:
        engine.dispose()


def backend_table(
    backend: str, tmp: Path, queue: str, request: pytest.FixtureRequest
) -> dict[str, Any]:
    """A ``[queues.default]`` table for ``backend``; what it creates is removed afterwards."""
    if backend in ("sqlite", "postgresql"):
        prefix = f"t{uuid.uuid4().hex[:8]}_"
        if backend == "postgresql":
            _require_postgresql()
            url = POSTGRESQL_URL
        else:
            url = f"sqlite:///{tmp / 'pashq.sqlite3'}"
        table: dict[str, Any] = {
            "type": "database",
            "url": url,
            "table_prefix": prefix,
            "create_tables": True,
            "lease": 5.0,
            "poll_interval": 0.1,
        }

        def drop() -> None:
            conn = make_connection({k: v for k, v in table.items() if k != "plugins"})
            conn.driver.drop_tables()
            conn.close()

        request.addfinalizer(drop)
        return table
    if backend == "rabbitmq":
        delete_queues(set())  # fails the test at once when the broker is down
        request.addfinalizer(lambda: delete_queues({queue, f"{queue}.failed"}))
        return {"type": "rabbitmq", "url": RABBITMQ_URL}
    endpoint = request.getfixturevalue("moto_endpoint")
    return {
        "type": "sqs",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "create_queues": True,
        "visibility_timeout": 5,
        "wait_time": 1,
    }


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, table: dict[str, Any], imports: list[str] | None = None) -> Path:
    """Write a pashq.toml with ``table`` as ``[queues.default]``."""
    lines = []
    if imports:
        lines.append(f"imports = {_toml_value(imports)}")
    lines.append("[queues.default]")
    lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def worker_env(**extra: str) -> dict[str, str]:
    """The environment of a ``pashq work`` subprocess: this directory on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_worker(
    config: Path, queue: str, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``pashq work QUEUE ARGS...`` to the end and return what it printed.

    Give ``--max-messages N`` (deliveries, retries included) rather than ``--until-empty``
    for runs with retries: on SQS a 0.05 s retry comes back after 1 s (visibility is
    whole seconds), after ``until_empty`` has already ended the run.
    """
    command = [
        sys.executable, "-m", "pashq", "work", queue, "--config", str(config),
        "--poll-timeout", "0.5", *args,
    ]  # fmt: skip
    proc = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=timeout, cwd=config.parent
    )
    assert proc.returncode == 0, f"pashq work failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    return proc

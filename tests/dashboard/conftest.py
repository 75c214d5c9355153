"""Fixtures of the dashboard tests: a configured pashq, the app, a test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import pashq
from pashq_dashboard import create_app

from . import dashboard_messages

TOKEN = "s3cret-token-for-the-tests"


@pytest.fixture(autouse=True)
def _not_fixed() -> Iterator[None]:
    dashboard_messages.fixed.clear()
    dashboard_messages.processed.clear()
    yield
    dashboard_messages.fixed.clear()


@pytest.fixture
def sqlite_config(tmp_path: Path) -> dict[str, object]:
    """A SQLite connection and a memory one (with a configured queue)."""
    return {
        "queues": {
            "default": {"type": "database", "url": f"sqlite:///{tmp_path / 'q.sqlite3'}"},
            "mem": {"type": "memory", "queues": ["configured"]},
        }
    }


@pytest.fixture
def client(sqlite_config: dict[str, object]) -> Iterator[TestClient]:
    pashq.configure(sqlite_config)
    with TestClient(create_app(), base_url="http://127.0.0.1") as c:
        yield c

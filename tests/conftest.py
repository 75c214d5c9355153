"""Shared fixtures: every test starts and ends with no open pashq connections."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import pashq


@pytest.fixture(autouse=True)
def _close_pashq_connections() -> Iterator[None]:
    """Close connections a test opened through the process-wide facade."""
    yield
    pashq.close()

"""Shared fixtures: every test starts and ends with no pashq configuration or connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import pashq


@pytest.fixture(autouse=True)
def _reset_pashq() -> Iterator[None]:
    """Close connections a test opened and forget the configuration it set."""
    yield
    pashq.reset()

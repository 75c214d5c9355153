"""``Connection.queues()``: the driver's ``pashq_queues`` plus the ``queues = [...]`` key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pashq.cli import main
from pashq.errors import ConfigError, UnsupportedError
from pashq.testing import make_connection
from pashq.testing.messages import Recorded


def test_memory_lists_queues_holding_messages_and_the_configured_ones() -> None:
    conn = make_connection({"type": "memory", "queues": ["reports"]})
    try:
        conn.dispatch("emails", Recorded("k", 1))
        assert conn.queues() == ["emails", "reports"]
    finally:
        conn.close()


def test_a_driver_without_the_capability_lists_the_configured_queues() -> None:
    conn = make_connection({"type": "logger", "queues": ["b", "a"]})
    try:
        assert conn.queues() == ["a", "b"]
    finally:
        conn.close()


def test_a_driver_without_the_capability_or_configured_queues_is_unsupported() -> None:
    conn = make_connection({"type": "logger"})
    try:
        with pytest.raises(UnsupportedError, match=r"cannot list its queues.*queues = \["):
            conn.queues()
    finally:
        conn.close()


@pytest.mark.parametrize("bad", ["emails", ["emails", "emails"], [""], [1]])
def test_a_bad_queues_key_names_the_key(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"\[queues.contract\]: 'queues' must be a list"):
        make_connection({"type": "memory", "queues": bad})


def test_pashq_queues_lists_the_configured_queues(tmp_path: Path) -> None:
    file = tmp_path / "pashq.toml"
    file.write_text('[queues.default]\ntype = "logger"\nqueues = ["jobs", "emails"]\n')
    result = CliRunner().invoke(main, ["queues", "--config", str(file), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == ["emails", "jobs"]
    result = CliRunner().invoke(main, ["queues", "--config", str(file)])
    assert result.output.split() == ["emails", "jobs"]


def test_pashq_queues_explains_a_connection_that_cannot_list(tmp_path: Path) -> None:
    file = tmp_path / "pashq.toml"
    file.write_text('[queues.default]\ntype = "logger"\n')
    result = CliRunner().invoke(main, ["queues", "--config", str(file)])
    assert result.exit_code == 1
    assert "cannot list its queues" in result.output

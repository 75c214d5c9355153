"""Entry-point discovery: duplicates name both distributions, unknown names list choices."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pashq import DuplicateDriverError
from pashq.discovery import DRIVER_GROUP, find, installed


def _fake_distribution(root: Path, name: str, target: str) -> None:
    info = root / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[pashq.drivers]\ndupe = {target}\n")


@pytest.fixture
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.syspath_prepend(str(tmp_path))
    installed.cache_clear()
    yield tmp_path
    installed.cache_clear()


def test_builtin_drivers_register_through_entry_points() -> None:
    names = installed(DRIVER_GROUP)
    for name in ("memory", "sync", "async", "logger"):
        assert names[name].distribution == "pashq"


def test_two_distributions_claiming_one_name_is_an_error(fake_site: Path) -> None:
    _fake_distribution(fake_site, "pashq-one", "one:Driver")
    _fake_distribution(fake_site, "pashq-two", "two:Driver")
    with pytest.raises(
        DuplicateDriverError,
        match=r"'dupe' is registered by two distributions: "
        r"pashq-\w+ 1.0 .* and pashq-\w+ 1.0",
    ):
        installed(DRIVER_GROUP)


def test_cli_reports_duplicate_driver_names(fake_site: Path) -> None:
    from click.testing import CliRunner

    from pashq.cli import main

    _fake_distribution(fake_site, "pashq-one", "one:Driver")
    _fake_distribution(fake_site, "pashq-two", "two:Driver")
    result = CliRunner().invoke(main, ["drivers"])
    assert result.exit_code == 1
    assert "registered by two distributions" in result.output


def test_find_names_the_group_kind_and_where(fake_site: Path) -> None:
    with pytest.raises(Exception, match=r"^f.toml \[queues.x\]: driver 'nope' is not installed"):
        find(DRIVER_GROUP, "nope", "f.toml [queues.x]")
    assert sys.path[0] == str(fake_site)


def test_a_broken_command_entry_point_does_not_break_help(fake_site: Path) -> None:
    """DOC_NOTES bug 5: ``pashq --help`` lists it; running it is a one-line error."""
    from click.testing import CliRunner

    from pashq.cli import main

    info = fake_site / "pashq_broken-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pashq-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[pashq.commands]\nbroken = os:no_such_command\n")
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    assert "broken" in result.output and "cannot be loaded" in result.output
    result = CliRunner().invoke(main, ["broken"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "no_such_command" in result.output

"""Hostile or broken configuration and text: clear errors, no secrets shown, data never markup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import pashq
from pashq.cli import main
from pashq.connection import Connection
from pashq.errors import ConfigError
from pashq.facade import import_messages
from pashq.redaction import redact_url
from pashq.testing import make_connection
from pashq.testing.messages import Recorded


@pytest.mark.parametrize("key", ["retry_delay", "retry_delay_max"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan", "inf"])
def test_non_finite_retry_delays_are_refused(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"'{key}' must be a finite number"):
        make_connection({"type": "memory", key: value})


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_driver_options_are_refused(value: float) -> None:
    with pytest.raises(ConfigError, match="'lease' must be a finite number"):
        make_connection({"type": "memory", "lease": value})


def test_values_from_the_environment_are_not_echoed_in_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PASHQ_TEST_SECRET_VALUE", "hunter2")
    for key in ("max_attempts", "lease"):
        with pytest.raises(ConfigError) as caught:
            make_connection({"type": "memory", key: "${PASHQ_TEST_SECRET_VALUE}"})
        assert "hunter2" not in str(caught.value)
        assert "${PASHQ_TEST_SECRET_VALUE}" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://user:p@ss@broker:5672/vhost", "amqp://user:***@broker:5672/vhost"),
        ("http://u:s3cr@t@127.0.0.1:4566", "http://u:***@127.0.0.1:4566"),
        ("postgresql://a:b@h/db and redis://:pw@r:6379/0", "postgresql://a:***@h/db and redis://:***@r:6379/0"),
    ],
)  # fmt: skip
def test_a_password_with_an_unencoded_at_sign_is_masked_whole(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_message_module_that_raises_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"broken_messages_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("x = 1\nraise ValueError('bad setting in module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        import_messages([name])
    text = str(caught.value)
    assert f"importing message module {name!r} failed: ValueError: bad setting" in text
    assert f"{name}.py:2" in text


@pytest.fixture
def sqlite_config(tmp_path: Path) -> Iterator[tuple[Path, Connection]]:
    config = tmp_path / "pashq.toml"
    url = f"sqlite:///{tmp_path / 'q.sqlite3'}"
    config.write_text(f'[queues.default]\ntype = "database"\nurl = "{url}"\ncreate_tables = true\n')
    conn = make_connection({"type": "database", "url": url, "create_tables": True})
    yield config, conn
    conn.close()


def _dead_letter(conn: Connection, queue: str, reason: str) -> str:
    message_id = conn.dispatch(queue, Recorded("k", 1))
    (delivery,) = conn.hook.pashq_pull(queue=queue, max_messages=1, timeout=1.0)
    conn.hook.pashq_dead_letter(queue=queue, delivery=delivery, reason=reason, traceback=None)
    return message_id


def test_failed_list_prints_reasons_as_text_not_markup(
    sqlite_config: tuple[Path, Connection],
) -> None:
    config, conn = sqlite_config
    _dead_letter(conn, "jobs", "bad [/bold] input [blink red]styled[/blink red]")
    wide = CliRunner(env={"COLUMNS": "300"})
    result = wide.invoke(main, ["failed", "list", "jobs", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "[/bold]" in result.output and "[blink red]" in result.output


def test_failed_list_json_gives_failed_at_in_iso_8601_utc(
    sqlite_config: tuple[Path, Connection],
) -> None:
    config, conn = sqlite_config
    _dead_letter(conn, "jobs", "boom")
    result = CliRunner().invoke(main, ["failed", "list", "jobs", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["failed_at"].endswith("Z") and "T" in row["failed_at"]


def test_the_cli_loads_drivers_before_the_current_directory_joins_sys_path(
    sqlite_config: tuple[Path, Connection],
) -> None:
    """A stray module in the working directory named like the driver's client never runs."""
    config, _ = sqlite_config
    workdir = config.parent
    (workdir / "sqlalchemy.py").write_text(
        "raise SystemExit('HIJACKED: stray sqlalchemy.py ran')\n"
    )
    script = Path(sys.executable).with_name("pashq")
    result = subprocess.run(
        [str(script), "stats", "jobs", "--json"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PASHQ_CONFIG": str(config)},
    )
    assert "HIJACKED" not in result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["queue"] == "jobs"


def test_worker_logs_never_show_a_url_password(caplog: pytest.LogCaptureFixture) -> None:
    """A backend error quoting a URL with its password is redacted in the log and stats."""

    class Failing:
        @pashq.hookimpl(tryfirst=True)
        def pashq_pull(self, queue: str, max_messages: int, timeout: float) -> None:
            raise OSError("Could not connect to the endpoint URL: http://u:t0psecret@10.0.0.1/")

    conn = make_connection({"type": "memory"})
    conn.plugin_manager.register(Failing())
    worker = pashq.Worker("q", connection=conn, install_signal_handlers=False, poll_timeout=0.1)
    seen: list[pashq.WorkerStats] = []

    def progress(stats: pashq.WorkerStats) -> None:
        seen.append(stats)
        if stats.errors >= 2:
            worker.stop()

    worker.on_progress = progress
    with caplog.at_level("DEBUG"):
        stats = worker.run()
    assert stats.errors >= 2
    assert "t0psecret" not in caplog.text
    assert "t0psecret" not in (stats.last_error or "")
    assert "u:***@10.0.0.1" in caplog.text
    conn.close()

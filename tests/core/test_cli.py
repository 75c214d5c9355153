"""The pashq command line, in process (click's runner) and as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pashq.cli import main


@pytest.fixture
def config(tmp_path: Path) -> Path:
    file = tmp_path / "pashq.toml"
    file.write_text('[queues.default]\ntype = "memory"\n')
    return file


def test_drivers_lists_builtin_drivers_with_capabilities() -> None:
    result = CliRunner().invoke(main, ["drivers", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["memory"]["distribution"] == "pashq"
    assert "lease" in rows["memory"]["capabilities"]
    assert "consume" not in rows["logger"]["capabilities"]


def test_drivers_table_on_a_real_process() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pashq", "drivers"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("memory", "sync", "async", "logger"):
        assert name in out
    assert "distribution" in out


def test_stats_json(config: Path) -> None:
    result = CliRunner().invoke(main, ["stats", "jobs", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [
        {"queue": "jobs", "ready": 0, "delayed": 0, "in_flight": 0, "failed": 0}
    ]


def test_failed_list_retry_purge_json(config: Path) -> None:
    runner = CliRunner()
    for args in (
        ["failed", "list", "q"],
        ["failed", "retry", "q"],
        ["failed", "purge", "q", "--yes"],
        ["purge", "q", "--yes"],
    ):
        result = runner.invoke(main, [*args, "--config", str(config), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output) in (
            [],
            {"queue": "q", "retried": 0},
            {"queue": "q", "purged": 0},
        )


def test_config_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "pashq.toml"
    bad.write_text('[queues.default]\ntype = "memory"\nleese = 1\n')
    result = CliRunner().invoke(main, ["stats", "q", "--config", str(bad)])
    assert result.exit_code == 1
    assert "Error:" in result.output and "unknown option(s) leese" in result.output
    assert "Traceback" not in result.output


def test_unsupported_command_for_driver_is_explained(tmp_path: Path) -> None:
    file = tmp_path / "pashq.toml"
    file.write_text('[queues.default]\ntype = "logger"\n')
    result = CliRunner().invoke(main, ["stats", "q", "--config", str(file)])
    assert result.exit_code == 1
    assert "does not support stats" in result.output


def test_work_until_empty_reports_json_summary(config: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "work",
            "jobs",
            "--config",
            str(config),
            "--until-empty",
            "--json",
            "--poll-timeout",
            "0.1",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["queues"] == ["jobs"] and summary["acked"] == 0


def test_work_imports_modules_from_the_current_directory(tmp_path: Path) -> None:
    (tmp_path / "app_messages.py").write_text(
        "import attrs, pashq\n"
        "@attrs.define\n"
        "class Hello(pashq.Message, type_name='cli.hello'):\n"
        "    def process_message(self): pass\n"
    )
    (tmp_path / "pashq.toml").write_text(
        'imports = ["app_messages"]\n[queues.default]\ntype = "memory"\n'
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pashq",
            "work",
            "jobs",
            "--until-empty",
            "--json",
            "--poll-timeout",
            "0.1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["consuming"] is True


def test_work_with_missing_import_names_the_module(config: Path) -> None:
    result = CliRunner().invoke(
        main, ["work", "q", "--config", str(config), "--import", "no_such_module_x"]
    )
    assert result.exit_code == 1
    assert "cannot import message module 'no_such_module_x'" in result.output


def test_work_time_limit_and_prefetch_options(tmp_path: Path) -> None:
    """``--time-limit`` and ``--prefetch`` reach the worker (SQLite, as a real process)."""
    db = tmp_path / "cli.sqlite3"
    config = tmp_path / "pashq.toml"
    config.write_text(
        f'[queues.default]\ntype = "database"\nurl = "sqlite:///{db}"\n'
        "create_tables = true\nmax_attempts = 1\n"
    )
    (tmp_path / "cli_messages.py").write_text(
        "import time\nimport attrs\nimport pashq\n\n"
        "@attrs.define\nclass Slow(pashq.Message, type_name='tests.cli.slow'):\n"
        "    seconds: float\n\n    def process_message(self) -> None:\n"
        "        end = time.monotonic() + self.seconds\n"
        "        while time.monotonic() < end:\n            pass\n"
    )
    script = (
        "import pashq, cli_messages\n"
        f"pashq.configure({str(config)!r})\n"
        "pashq.queue().dispatch_many('jobs', [cli_messages.Slow(5.0), cli_messages.Slow(0.0)])\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=60)
    options = ["--import", "cli_messages", "--until-empty", "--json", "--concurrency", "2"]
    options += ["--time-limit", "0.5", "--prefetch", "1"]
    proc = subprocess.run(
        [sys.executable, "-m", "pashq", "work", "jobs", "--config", str(config), *options],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["acked"] == 1 and summary["dead_lettered"] == 1 and summary["timed_out"] == 1
    assert "time limit of 0.5 s exceeded" in proc.stderr

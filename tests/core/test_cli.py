"""The pashq command line, in process (click's runner) and as a real process."""

from __future__ import annotations

import json
import os
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


def test_config_option_is_accepted_before_the_command(tmp_path: Path) -> None:
    file = tmp_path / "elsewhere.toml"
    file.write_text('[queues.default]\ntype = "memory"\n')
    result = CliRunner().invoke(main, ["--config", str(file), "stats", "q", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)[0]["queue"] == "q"


def test_command_config_option_wins_over_the_group_one(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[queues.default]\ntype = "memory"\n')
    bad = tmp_path / "bad.toml"
    bad.write_text("queue = 1\n")
    result = CliRunner().invoke(
        main, ["--config", str(bad), "stats", "q", "--json", "--config", str(good)]
    )
    assert result.exit_code == 0, result.output


def _work_log(tmp_path: Path, *options: str) -> str:
    (tmp_path / "noisy_messages.py").write_text(
        "import logging, attrs, pashq\n"
        "@attrs.define\n"
        "class Noisy(pashq.Message, type_name='cli.noisy'):\n"
        "    def process_message(self):\n"
        "        logging.getLogger('somelib.io').info('somelib connected')\n"
        "        logging.getLogger('somelib.io').warning('somelib slow')\n"
    )
    (tmp_path / "pashq.toml").write_text(
        'imports = ["noisy_messages"]\n[queues.default]\ntype = "database"\n'
        'url = "sqlite:///noisy.sqlite3"\n'
    )
    subprocess.run(
        [sys.executable, "-c", "import noisy_messages; noisy_messages.Noisy().dispatch('q')"],
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pashq", "work", "q", "--until-empty", *options],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_work_log_file_keeps_other_libraries_info_lines_out(tmp_path: Path) -> None:
    log = _work_log(tmp_path)
    assert "somelib slow" in log
    assert "somelib connected" not in log


def test_work_logs_the_started_line_the_docs_quote(tmp_path: Path) -> None:
    expected = "INFO pashq.cli: worker started: connection=default driver=database queues=q"
    assert expected in _work_log(tmp_path)


def test_work_log_shows_other_libraries_info_lines_with_vv(tmp_path: Path) -> None:
    assert "somelib connected" in _work_log(tmp_path, "-vv")


def test_work_on_a_driver_without_consume_refuses_before_logging_a_start(
    tmp_path: Path,
) -> None:
    (tmp_path / "pashq.toml").write_text('[queues.default]\ntype = "async"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "pashq", "work", "q", "--until-empty"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "there is nothing for a worker to consume" in proc.stderr
    assert "INFO" not in proc.stderr  # no "worker started" line before the refusal


def test_failed_list_table_never_cuts_ids_at_80_columns(tmp_path: Path) -> None:
    (tmp_path / "pashq.toml").write_text(
        '[queues.default]\ntype = "database"\nurl = "sqlite:///failed.sqlite3"\n'
    )
    (tmp_path / "invalid_messages.py").write_text(
        "import attrs, pashq\n"
        "@attrs.define\n"
        "class Invalid(pashq.Message, type_name='cli.invalid'):\n"
        "    def validate_message(self): return False\n"
    )
    script = (
        "import pashq, invalid_messages\n"
        "print(invalid_messages.Invalid().dispatch('q'))\n"
        "pashq.Worker('q', install_signal_handlers=False).run(until_empty=True)\n"
    )
    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    message_id = out.stdout.split()[-1]
    table = subprocess.run(
        [sys.executable, "-m", "pashq", "failed", "list", "q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    assert max(map(len, table.stdout.splitlines())) <= 80
    assert message_id in table.stdout

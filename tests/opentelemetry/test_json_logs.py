"""``pashq work --log-format json``: one JSON object per line, one ``message.*`` event per
delivery with its fields; ``--json`` keeps its JSON logs (without a record per message)
and summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from otel_messages import AlwaysFails, FailsTwice, Fine
from otel_support import backend_table, run_worker, worker_env, write_config

from pashq.testing import make_connection


def _dispatch(table: dict[str, Any], queue: str) -> dict[str, str]:
    producer = make_connection(table)
    try:
        return {
            "fine": producer.dispatch(queue, Fine(1)),
            "fails_twice": producer.dispatch(queue, FailsTwice(2)),
            "dead": producer.dispatch(queue, AlwaysFails(3)),
        }
    finally:
        producer.close()


@pytest.fixture
def sqlite_config(tmp_path: Path, queue_name: str, request: pytest.FixtureRequest) -> Any:
    table = backend_table("sqlite", tmp_path, queue_name, request)
    return table, write_config(tmp_path / "pashq.toml", table, imports=["otel_messages"])


def _records(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines()]  # every line is JSON


def test_every_delivery_is_one_json_line_with_its_fields(
    sqlite_config: Any, queue_name: str
) -> None:
    table, config = sqlite_config
    ids = _dispatch(table, queue_name)
    proc = run_worker(config, queue_name, "--log-format", "json", "--until-empty", env=worker_env())
    records = _records(proc.stderr)
    assert {"time", "level", "logger", "event", "message"} <= set(records[0])
    events = [r for r in records if r["event"].startswith("message.")]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in events:
        by_id.setdefault(record["message_id"], []).append(record)
    assert [r["event"] for r in by_id[ids["fine"]]] == ["message.acked"]
    assert [r["outcome"] for r in by_id[ids["fails_twice"]]] == ["retry", "retry", "ack"]
    assert [r["attempts"] for r in by_id[ids["fails_twice"]]] == [1, 2, 3]
    retry, dead = by_id[ids["dead"]]
    assert dead["event"] == "message.dead_lettered"
    assert dead["level"] == "WARNING"
    assert dead["queue"] == queue_name
    assert dead["type"] == "pashq_tests.otel.always_fails"
    assert dead["error"] == "failed 2 time(s), last: ValueError: card 3 declined"
    assert retry["error"] == "ValueError: card 3 declined"
    assert isinstance(dead["duration"], float) and dead["duration"] >= 0
    assert by_id[ids["fine"]][0]["time"].endswith("Z")
    assert "error" not in by_id[ids["fine"]][0]
    assert proc.stdout == ""  # no summary without --json


def test_json_flag_keeps_json_logs_and_prints_the_summary(
    sqlite_config: Any, queue_name: str
) -> None:
    table, config = sqlite_config
    _dispatch(table, queue_name)
    proc = run_worker(config, queue_name, "--json", "--until-empty", env=worker_env())
    events = [r["event"] for r in _records(proc.stderr)]
    # --json alone: the run's own lines as JSON, no record per message (as before).
    assert "message.acked" not in events
    assert "worker.started" in events
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (summary["acked"], summary["retried"], summary["dead_lettered"]) == (2, 3, 1)


def test_json_flag_with_text_log_format_logs_text(sqlite_config: Any, queue_name: str) -> None:
    table, config = sqlite_config
    _dispatch(table, queue_name)
    proc = run_worker(
        config, queue_name, "--json", "--log-format", "text", "--until-empty", env=worker_env()
    )
    assert "worker started: connection=default" in proc.stderr
    assert not proc.stderr.lstrip().startswith("{")
    assert json.loads(proc.stdout.strip().splitlines()[-1])["acked"] == 2

"""``pashq move`` options and errors: --dry-run, --limit, --json, delayed messages and
attempts on the database driver, and clear messages for bad arguments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pashq.cli import main
from pashq.delivery import Delivery

from .move_messages import Parcel


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """Two SQLite files (``a``, ``b``) and a ``[queues.memory]`` connection."""
    path = tmp_path / "pashq.toml"
    path.write_text(
        f'[queues.a]\ntype = "database"\nurl = "sqlite:///{tmp_path / "a.db"}"\nlease = 2.0\n\n'
        f'[queues.b]\ntype = "database"\nurl = "sqlite:///{tmp_path / "b.db"}"\n\n'
        '[queues.mem]\ntype = "memory"\n'
    )
    return path


def _connection(config: Path, name: str) -> Any:
    import pashq

    pashq.configure(config)
    return pashq.queue(name)


def _move(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["move", "--config", str(config), *args])


def _json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _ids(connection: Any, queue: str, expected: int) -> list[Delivery]:
    from pashq.testing import drain

    return drain(connection, queue, expected, timeout=10)


def test_dry_run_counts_and_moves_nothing(config: Path) -> None:
    """``--dry-run`` reports ready, delayed and (with --failed) dead letters; both sides
    stay as they were."""
    a = _connection(config, "a")
    a.dispatch_many("jobs", [Parcel(n) for n in range(7)])
    a.dispatch_many("jobs", [Parcel(n) for n in range(3)], delay=3600)
    report = _json(_move(config, "a:jobs", "b:jobs", "--dry-run", "--json"))
    assert report["dry_run"] is True
    assert (report["moved"], report["delayed"]) == (10, 3)
    assert a.stats("jobs").ready == 7
    assert _connection(config, "b").stats("jobs").ready == 0


def test_limit_moves_at_most_n_and_leaves_the_rest(config: Path) -> None:
    """``--limit 4`` moves four messages; the other six stay at the source."""
    a = _connection(config, "a")
    sent = a.dispatch_many("jobs", [Parcel(n) for n in range(10)])
    report = _json(_move(config, "a:jobs", "b:jobs", "--limit", "4", "--json"))
    assert report["moved"] == 4
    assert report["left_ready"] == 6
    moved = _ids(_connection(config, "b"), "jobs", 4)
    assert [d.id for d in moved] == sent[:4]
    assert len(_ids(_connection(config, "a"), "jobs", 6)) == 6


def test_delayed_messages_keep_their_due_time_and_attempts_carry_over(config: Path) -> None:
    """Between two database connections a delayed message stays delayed for about the
    time it had left, and a message retried twice arrives with its third attempt next."""
    a = _connection(config, "a")
    (later,) = a.dispatch_many("jobs", [Parcel(1)], delay=3600)
    (tried,) = a.dispatch_many("jobs", [Parcel(2)])
    for _ in range(2):  # two failed attempts, released at once
        (delivery,) = a.hook.pashq_pull(queue="jobs", max_messages=1, timeout=5)
        a.hook.pashq_nack(queue="jobs", deliveries=[delivery], delay=0)
    report = _json(_move(config, "a:jobs", "b:jobs", "--json"))
    assert (report["moved"], report["delayed"]) == (2, 1)
    assert report["kept"] == ["due_time", "attempts"]
    b = _connection(config, "b")
    stats = b.stats("jobs")
    assert (stats.ready, stats.delayed) == (1, 1)
    (delivery,) = b.hook.pashq_pull(queue="jobs", max_messages=5, timeout=5)
    assert delivery.id == tried
    assert delivery.attempts == 3
    (waiting,) = b.hook.pashq_claim_waiting(queue="jobs", max_messages=5)
    assert waiting.delivery.id == later
    assert 3500 < waiting.due_in <= 3600


def test_text_summary_names_both_sides(config: Path) -> None:
    """Without --json the summary says what moved, from where, to where, what was kept."""
    _connection(config, "a").dispatch_many("jobs", [Parcel(n) for n in range(3)])
    result = _move(config, "a:jobs", "b:other")
    assert result.exit_code == 0, result.output
    assert "moved 3 message(s) from a:jobs to b:other" in result.output
    assert "kept: due time, attempts" in result.output
    assert "left at a:jobs: ready 0, delayed 0, in flight 0, failed 0" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["jobs", "b:jobs"], "SOURCE 'jobs' is not CONNECTION:QUEUE"),
        (["a:jobs", "b:"], "DEST 'b:' is not CONNECTION:QUEUE"),
        (["nope:jobs", "b:jobs"], "no connection named 'nope' (configured: a, b, mem)"),
        (["a:jobs", "a:jobs"], "source and destination are the same queue (a:jobs and a:jobs)"),
        (["a:jobs", "mem:jobs"], "keeps messages only in this process's memory"),
        (["mem:jobs", "a:jobs", "--failed", "--failed-as", "dead"], None),
    ],
    ids=["no-colon", "empty-queue", "unknown-connection", "same-queue", "memory-dest", "ok"],
)
def test_bad_arguments_are_clear_errors(config: Path, args: list[str], expected: str) -> None:
    """Each mistake is one line naming it, exit status 1, and nothing moves."""
    result = _move(config, *args)
    if expected is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1, result.output
    assert expected in result.output
    assert "Traceback" not in result.output


def test_failed_as_dead_is_refused_when_dest_keeps_no_dead_letters(tmp_path: Path) -> None:
    """``--failed-as dead`` to a driver without stored dead letters says to use waiting."""
    path = tmp_path / "pashq.toml"
    path.write_text(
        f'[queues.a]\ntype = "database"\nurl = "sqlite:///{tmp_path / "a.db"}"\n\n'
        f'[queues.spool]\ntype = "spool"\npath = "{tmp_path / "spool"}"\n'
    )
    result = _move(path, "a:jobs", "spool:jobs", "--failed", "--failed-as", "dead")
    assert result.exit_code == 1, result.output
    assert "cannot keep moved dead letters; use --failed-as waiting" in result.output

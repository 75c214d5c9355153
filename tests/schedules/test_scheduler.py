"""Schedules: slots from cron, catch_up, config and decorator, the CLI (memory store)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

import pashq
from pashq.cli import main
from pashq.errors import ConfigError
from pashq.schedules import load_schedules
from pashq.testing import wait_for


@attrs.define
class Report(pashq.Message, type_name="schedules.report", queue="reports"):
    """Dispatched by the schedules of these tests."""

    region: str = "all"

    def process_message(self) -> None:
        pass


def _at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _memory() -> pashq.Connection:
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    return pashq.queue()


def _queued(connection: pashq.Connection, queue: str = "reports") -> int:
    return connection.stats(queue).ready or 0


def test_latest_and_next_slot_follow_the_timezone() -> None:
    """``0 2 * * *`` in Europe/Paris is 01:00 UTC in winter."""
    item = pashq.Schedule("nightly", "schedules.report", "0 2 * * *", timezone="Europe/Paris")
    now = _at("2026-12-01T12:00:00+00:00")
    assert item.latest(now).astimezone(UTC).isoformat() == "2026-12-01T01:00:00+00:00"
    assert item.next_after(now).astimezone(UTC).isoformat() == "2026-12-02T01:00:00+00:00"


def test_slot_exactly_now_is_the_latest() -> None:
    """At 12:05:00 sharp the 12:05 slot is due (not 12:04)."""
    item = pashq.Schedule("m", "schedules.report", "* * * * *")
    assert item.latest(_at("2026-12-01T12:05:00+00:00")).minute == 5


def test_bad_cron_and_zone_name_the_schedule() -> None:
    """A wrong cron or timezone is a ConfigError naming the table."""
    with pytest.raises(ConfigError, match=r"\[schedules.x\]: 'cron' 'every day'"):
        load_schedules({"x": {"message": "schedules.report", "cron": "every day"}}, "app.toml")
    with pytest.raises(ConfigError, match="'timezone' 'Mars/Base'"):
        load_schedules(
            {"x": {"message": "schedules.report", "cron": "* * * * *", "timezone": "Mars/Base"}},
            "app.toml",
        )


def test_unknown_schedule_key_is_refused_by_the_config() -> None:
    """``[schedules.x] crontab = ...`` names the key and the accepted ones."""
    with pytest.raises(ConfigError, match=r"unknown key.*crontab"):
        pashq.configure(
            {
                "queues": {"default": {"type": "memory"}},
                "schedules": {"x": {"message": "schedules.report", "crontab": "* * * * *"}},
            }
        )


def test_slot_fires_once_and_not_again() -> None:
    """A scheduler looking twice at the same minute dispatches the slot once."""
    connection = _memory()
    now = [_at("2026-12-01T12:00:10+00:00")]
    item = pashq.Schedule("m", "schedules.report", "* * * * *", body={"region": "eu"})
    runner = pashq.Scheduler([item], clock=lambda: now[0])
    assert len(runner.tick()) == 1
    now[0] += 20
    assert runner.tick() == []
    assert _queued(connection) == 1


def test_two_schedulers_share_the_slot() -> None:
    """Two schedulers on one store: the second finds the slot taken."""
    connection = _memory()
    clock = lambda: _at("2026-12-01T12:00:01+00:00")  # noqa: E731
    item = pashq.Schedule("shared", "schedules.report", "* * * * *")
    first, second = pashq.Scheduler([item], clock=clock), pashq.Scheduler([item], clock=clock)
    assert len(first.tick()) == 1
    assert second.tick() == []
    assert _queued(connection) == 1


def test_down_through_slots_fires_the_latest_within_catch_up() -> None:
    """Back after five minutes down, a scheduler fires only the last slot, once."""
    connection = _memory()
    now = [_at("2026-12-01T12:00:05+00:00")]
    item = pashq.Schedule("m", "schedules.report", "* * * * *", catch_up=30)
    runner = pashq.Scheduler([item], clock=lambda: now[0])
    assert len(runner.tick()) == 1  # 12:00
    now[0] = _at("2026-12-01T12:05:20+00:00")
    fired = runner.tick()
    assert [f.slot.minute for f in fired] == [5]
    assert _queued(connection) == 2


def test_slot_older_than_catch_up_is_skipped() -> None:
    """A scheduler starting 90 s after a slot with catch_up=60 does not fire it."""
    connection = _memory()
    item = pashq.Schedule("daily", "schedules.report", "0 2 * * *", catch_up=60)
    runner = pashq.Scheduler([item], clock=lambda: _at("2026-12-01T02:01:30+00:00"))
    assert runner.tick() == []
    assert _queued(connection) == 0


def test_decorator_declares_a_schedule() -> None:
    """``@pashq.schedule`` adds a schedule named after the type unless named."""

    @pashq.schedule("*/5 * * * *", name="decorated-report", body={"region": "us"})
    @attrs.define
    class Decorated(pashq.Message, type_name="schedules.decorated"):
        region: str

        def process_message(self) -> None:
            pass

    found = {s.name: s for s in load_schedules({}, "<test>")}
    assert found["decorated-report"].cron == "*/5 * * * *"
    assert found["decorated-report"].body == {"region": "us"}


def test_pashq_schedules_lists_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pashq schedules --json`` shows each schedule with its next run in UTC."""
    (tmp_path / "pashq.toml").write_text(
        '[queues.default]\ntype = "memory"\n\n'
        '[schedules.nightly]\nmessage = "schedules.report"\ncron = "0 2 * * *"\n'
        'timezone = "UTC"\nbody = {region = "eu"}\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PASHQ_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["schedules", "--json", "-i", __name__])
    assert result.exit_code == 0, result.output
    (row,) = [r for r in __import__("json").loads(result.output) if r["name"] == "nightly"]
    assert row["queue"] == "reports" and row["next_run"].endswith("T02:00:00+00:00")


def test_unknown_message_type_fails_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schedule naming a type no imported module defines stops ``pashq schedules``
    with the table and the type."""
    (tmp_path / "pashq.toml").write_text(
        '[queues.default]\ntype = "memory"\n\n'
        '[schedules.bad]\nmessage = "schedules.nope"\ncron = "0 2 * * *"\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PASHQ_CONFIG", raising=False)
    result = CliRunner().invoke(main, ["schedules", "-i", __name__])
    assert result.exit_code == 1
    assert "[schedules.bad]: 'message' 'schedules.nope'" in result.output


@pytest.mark.slow
def test_real_time_two_schedulers_three_minutes(tmp_path: Path) -> None:
    """The unhurried variant: two schedulers on the real clock for three minutes of
    ``* * * * *`` (SQLite store) dispatch exactly three messages."""
    pashq.configure(
        {"queues": {"default": {"type": "database", "url": f"sqlite:///{tmp_path / 'db'}"}}}
    )
    connection = pashq.queue()
    name = f"real-{time.time_ns()}"
    item = pashq.Schedule(name, "schedules.report", "* * * * *", catch_up=5)
    # Start 10 s past a minute (its slot is older than catch_up) and run three minutes.
    wait_for(lambda: 10 <= time.time() % 60 < 20, timeout=70, interval=0.2)
    until = time.time() + 180
    runners = [pashq.Scheduler([item], poll=0.2) for _ in range(2)]
    threads = [threading.Thread(target=r.run) for r in runners]
    for t in threads:
        t.start()
    while time.time() < until:
        time.sleep(0.5)
    for r in runners:
        r.stop()
    for t in threads:
        t.join(10)
    assert sum(len(r.fired) for r in runners) == 3
    assert _queued(connection) == 3

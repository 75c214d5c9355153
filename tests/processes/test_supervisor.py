"""``pashq work --processes N``: restarts, recycling and signals, with real processes.

Every test runs ``python -m pashq work`` (the supervisor) over the database driver on SQLite
and PostgreSQL with 2-second leases; handlers write what they ran into files, so each
message can be checked id by id.
"""

from __future__ import annotations

import collections
import os
import signal

import pytest

from processes.conftest import App, alive, children, stderr_of, summary


def _counts(records: list[tuple[int, int]]) -> collections.Counter[int]:
    return collections.Counter(n for n, _ in records)


def test_killed_child_is_restarted_and_its_leased_messages_come_back(app: App) -> None:
    procs_app = app.module()
    app.dispatch([procs_app.Blocker(0)] + [procs_app.Job(n) for n in range(1, 21)])
    proc = app.work("--processes", "2", "--poll-timeout", "0.2")
    app.wait_for("the blocker to start", lambda: 0 in _counts(app.records("started.txt")))
    app.wait_for("both children", lambda: len(children(proc.pid)) == 2)
    holder = next(pid for n, pid in app.records("started.txt") if n == 0)
    before = set(children(proc.pid))
    assert holder in before
    (app.folder / "release").touch()  # the blocker's next run finishes
    os.kill(holder, signal.SIGKILL)
    app.wait_for(
        "a new child in the killed one's place",
        lambda: len(children(proc.pid)) == 2 and holder not in children(proc.pid),
    )
    # What the dead child held (the blocker, and whatever else it had claimed) comes back
    # after its lease and is run by a live child.
    app.wait_for(
        "every message to be done",
        lambda: set(_counts(app.records("done.txt"))) == set(range(21)),
    )
    redone = next(pid for n, pid in app.records("done.txt") if n == 0)
    assert redone != holder
    proc.send_signal(signal.SIGTERM)
    code, report, err = summary(proc)
    assert code == 0, err
    assert report["restarts"] == 1
    assert "died (signal SIGKILL)" in err


def test_recycling_by_message_count_loses_nothing_and_runs_nothing_twice(app: App) -> None:
    procs_app = app.module()
    total = 400
    app.dispatch([procs_app.Job(n, 0.002) for n in range(total)])
    proc = app.work(
        "--processes", "2", "--concurrency", "4", "--max-messages-per-child", "37",
        "--until-empty", "--poll-timeout", "0.2",
    )  # fmt: skip
    code, report, err = summary(proc, timeout=240)
    assert code == 0, err
    done = _counts(app.records("done.txt"))
    assert set(done) == set(range(total))
    assert [n for n, count in done.items() if count > 1] == []
    assert _counts(app.records("started.txt")) == done  # nothing started and abandoned
    assert report["acked"] == total
    assert report["recycled"] >= total // 37 - 1
    pids = {pid for _, pid in app.records("done.txt")}
    assert len(pids) >= report["recycled"]
    per_child = collections.Counter(pid for _, pid in app.records("done.txt"))
    assert max(per_child.values()) <= 37


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_stops_every_child_gracefully(app: App, sig: signal.Signals) -> None:
    procs_app = app.module()
    app.dispatch([procs_app.Job(n, 0.3) for n in range(60)])
    proc = app.work("--processes", "2", "--batch-size", "1", "--shutdown-timeout", "30")
    app.wait_for(
        "both children to run a message",
        lambda: len({pid for _, pid in app.records("started.txt")}) == 2,
    )
    kids = children(proc.pid)
    assert len(kids) == 2
    proc.send_signal(sig)
    code, report, err = summary(proc)
    assert code == 0, err
    assert report["interrupted"] is False
    assert not [pid for pid in kids if alive(pid)]  # no orphan left behind
    started, done = _counts(app.records("started.txt")), _counts(app.records("done.txt"))
    assert started == done  # every message a child began was finished ...
    assert report["acked"] == sum(done.values())  # ... and acked
    # ... and the rest is back in the queue, untouched.
    rest = app.work("--until-empty", "--poll-timeout", "0.2")
    code, _second, err = summary(rest)
    assert code == 0, err
    assert set(_counts(app.records("done.txt"))) == set(range(60))
    assert max(_counts(app.records("done.txt")).values()) == 1


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)
def test_recycling_by_memory_replaces_a_child_after_its_current_work(app: App) -> None:
    procs_app = app.module()
    app.dispatch([procs_app.Job(n, 0.05) for n in range(40)])
    proc = app.work("--max-memory-per-child", "1", "--until-empty", "--poll-timeout", "0.2")
    code, report, err = summary(proc, timeout=240)
    assert code == 0, err
    assert report["recycled"] >= 1
    assert "over --max-memory-per-child" in err
    done = _counts(app.records("done.txt"))
    assert set(done) == set(range(40))
    assert max(done.values()) == 1


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)
def test_max_messages_with_processes_is_a_usage_error(app: App) -> None:
    proc = app.work("--processes", "2", "--max-messages", "5")
    proc.communicate(timeout=60)
    err = stderr_of(proc)
    assert proc.returncode == 2
    assert "--max-messages-per-child" in err


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)
def test_child_failing_fast_stops_the_supervisor_with_its_error(app: App) -> None:
    config = app.folder / "pashq.toml"
    config.write_text(config.read_text().replace("create_tables = true", "create_tables = false"))
    proc = app.work("--processes", "2", "--fail-fast")
    proc.communicate(timeout=90)
    err = stderr_of(proc)
    assert proc.returncode == 1
    assert "Error: table(s)" in err and "pashq database create" in err
    assert "starting another" not in err  # stopped, not restarted in a loop


@pytest.mark.parametrize("app", ["sqlite"], indirect=True)
def test_second_sigterm_stops_every_child_at_once(app: App) -> None:
    procs_app = app.module()
    app.dispatch([procs_app.Job(n, 120.0) for n in range(4)])
    proc = app.work("--processes", "2", "--batch-size", "1", "--shutdown-timeout", "300")
    app.wait_for(
        "both children to run a message",
        lambda: len({pid for _, pid in app.records("started.txt")}) == 2,
    )
    kids = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    # Signals of one kind do not queue: send the second once the first reached the children.
    app.wait_for(
        "both children to start a graceful stop",
        lambda: stderr_of(proc).count("finishing in-flight work") == 2,
    )
    proc.send_signal(signal.SIGTERM)
    code, report, err = summary(proc, timeout=60)  # long before the handlers' 120 s
    assert code == 1, err
    assert report["interrupted"] is True
    assert report["acked"] == 0
    assert not [pid for pid in kids if alive(pid)]
    assert app.records("done.txt") == []

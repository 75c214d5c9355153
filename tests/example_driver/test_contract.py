"""The example third-party driver (``spool``, from pashq-example-driver) keeps the contract.

It is installed as its own distribution and found through its entry point, exactly as a
user's driver would be.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import pashq
from pashq.testing import DriverContract, QueueUnderTest, drain, make_connection, wait_for

LEASE = 1.0
_processed: list[int] = []


class TestSpoolContract(DriverContract):
    """spool: persistent, delays, leases, extension, nack delay, dead letters, stats, purge."""

    @pytest.fixture
    def queue_under_test(self, tmp_path: Path) -> Iterator[QueueUnderTest]:
        table = {
            "type": "spool",
            "path": str(tmp_path / "spool"),
            "lease": LEASE,
            "poll_interval": 0.05,
        }
        connection = make_connection(table)
        yield QueueUnderTest(
            connection,
            f"contract-{uuid.uuid4().hex[:8]}",
            open_connection=lambda: make_connection(table),
            lease=LEASE,
        )
        connection.close()


def _run_pashq(*args: str, cwd: Path | None = None) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "pashq", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_pashq_drivers_lists_spool_from_its_distribution() -> None:
    """`pashq drivers --json` finds spool through the entry point of pashq-example-driver."""
    rows = {row["name"]: row for row in _run_pashq("drivers", "--json")}
    spool = rows["spool"]
    assert spool["distribution"] == "pashq-example-driver"
    assert {"persistent", "lease", "extend_lease", "dead_letters"} <= set(spool["capabilities"])


@attrs.define
class Greeting(pashq.Message, type_name="example_driver.tests.greeting"):
    """Records its number when processed."""

    n: int

    def process_message(self) -> None:
        """Record the number."""
        _processed.append(self.n)


def test_worker_drains_messages_dispatched_through_configure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pashq.configure(type = "spool") + dispatch + Worker: each message processed once."""
    # Restores the process-wide settings after the test (pashq has no public reset).
    monkeypatch.setattr("pashq.facade._settings", None)
    pashq.configure({"queues": {"default": {"type": "spool", "path": str(tmp_path)}}})
    for n in range(20):
        Greeting(n).dispatch()
    _processed.clear()
    stats = pashq.Worker("default", install_signal_handlers=False).run(until_empty=True)
    assert sorted(_processed) == list(range(20))
    assert stats.acked == 20
    assert pashq.queue().stats("default").ready == 0
    assert not list((tmp_path / "default" / "leased").iterdir())


def test_spool_info_command_counts_each_queue(tmp_path: Path) -> None:
    """`pashq spool info --json` (entry-point group pashq.commands) shows the counts."""
    config = tmp_path / "pashq.toml"
    spool = tmp_path / "spool"
    config.write_text(f'[queues.default]\ntype = "spool"\npath = "{spool}"\n')
    connection = make_connection({"type": "spool", "path": str(spool)})
    try:
        connection.dispatch_many("mail", [Greeting(1), Greeting(2)])
        connection.dispatch("mail", Greeting(3), delay=3600)
    finally:
        connection.close()
    shown = _run_pashq("spool", "info", "--config", str(config), "--json")
    assert shown["path"] == str(spool.resolve())
    assert shown["queues"] == {"mail": {"ready": 2, "delayed": 1, "in_flight": 0, "failed": 0}}


_PULLER = textwrap.dedent(
    """
    import json, sys
    from pashq.testing import make_connection

    conn = make_connection({"type": "spool", "path": sys.argv[1], "lease": 60.0})
    got = []
    while True:
        deliveries = conn.hook.pashq_pull(queue="shared", max_messages=7, timeout=0.0)
        if not deliveries:
            break
        conn.hook.pashq_ack(queue="shared", deliveries=deliveries)
        got += [d.id for d in deliveries]
    conn.close()
    print(json.dumps(got))
    """
)


def test_processes_pulling_one_queue_never_get_the_same_message(tmp_path: Path) -> None:
    """Four processes drain one spool concurrently: every message once, none twice."""
    connection = make_connection({"type": "spool", "path": str(tmp_path), "fsync": False})
    ids = connection.dispatch_many("shared", [Greeting(n) for n in range(400)])
    connection.close()
    pullers = [
        subprocess.Popen(
            [sys.executable, "-c", _PULLER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    got: list[str] = []
    for puller in pullers:
        out, _ = puller.communicate(timeout=120)
        assert puller.returncode == 0
        got += json.loads(out)
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(ids)


def test_bad_options_name_the_key_and_where(tmp_path: Path) -> None:
    """parse_options errors name the [queues.<name>] table and the key."""
    with pytest.raises(pashq.ConfigError, match=r"\[queues.contract\].*missing option\(s\) path"):
        make_connection({"type": "spool"})
    with pytest.raises(pashq.ConfigError, match=r"\[queues.contract\].*'lease' must be > 0"):
        make_connection({"type": "spool", "path": str(tmp_path), "lease": 0})
    with pytest.raises(pashq.ConfigError, match=r"unknown option\(s\) lease_seconds"):
        make_connection({"type": "spool", "path": str(tmp_path), "lease_seconds": 5})
    (tmp_path / "a-file").write_text("")
    with pytest.raises(pashq.ConfigError, match=r"'path' '.*a-file' cannot be used"):
        make_connection({"type": "spool", "path": str(tmp_path / "a-file")})


def test_queue_name_that_is_not_a_directory_name_is_refused(tmp_path: Path) -> None:
    """A queue name that could escape the spool directory is a DriverError naming it."""
    connection = make_connection({"type": "spool", "path": str(tmp_path)})
    try:
        with pytest.raises(pashq.DriverError, match=r"queue name '\.\./etc'"):
            connection.dispatch("../etc", Greeting(1))
    finally:
        connection.close()


_STUCK = textwrap.dedent(
    """
    import pathlib, time
    import attrs, pashq

    @attrs.define
    class Stuck(pashq.Message, type_name="example_driver.tests.stuck"):
        marker: str

        def process_message(self) -> None:
            pathlib.Path(self.marker).write_text("started")
            time.sleep(300)
    """
)


@attrs.define
class Stuck(pashq.Message, type_name="example_driver.tests.stuck"):
    """Dispatched here; the worker process runs its own class of the same type name."""

    marker: str


@pytest.mark.slow
def test_message_of_a_killed_worker_process_comes_back(tmp_path: Path) -> None:
    """`pashq work` SIGKILLed mid-message: after its lease the message is delivered again."""
    (tmp_path / "stuck_messages.py").write_text(_STUCK)
    spool, marker = tmp_path / "spool", tmp_path / "started"
    config = tmp_path / "pashq.toml"
    config.write_text(
        f'imports = ["stuck_messages"]\n[queues.default]\ntype = "spool"\n'
        f'path = "{spool}"\nlease = {LEASE}\n'
    )
    connection = make_connection({"type": "spool", "path": str(spool), "lease": LEASE})
    message_id = connection.dispatch("jobs", Stuck(str(marker)))
    worker = subprocess.Popen(
        [sys.executable, "-m", "pashq", "work", "jobs", "--config", str(config)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(marker.exists, timeout=60, what="the worker to start the message")
    finally:
        worker.kill()
        worker.wait(timeout=60)
    try:
        (again,) = drain(connection, "jobs", 1, timeout=LEASE + 30)
        assert again.id == message_id
        assert again.attempts == 2
    finally:
        connection.close()

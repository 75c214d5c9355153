"""SIGTERM/SIGINT: finish in-flight work, release the rest, exit 0; a second signal stops now."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

APP = Path(__file__).with_name("signal_app.py")


def _start(
    concurrency: int, seconds: float, shutdown_timeout: float = 30.0
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP), str(concurrency), str(seconds), str(shutdown_timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_started(proc: subprocess.Popen[str], count: int = 1) -> None:
    assert proc.stdout is not None
    seen = 0
    deadline = time.monotonic() + 30
    while seen < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"worker exited early: {proc.stderr.read() if proc.stderr else ''}"
        seen += line.startswith("start ")


def _report(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any]]:
    out, err = proc.communicate(timeout=60)
    lines = [line for line in out.splitlines() if line.startswith("REPORT ")]
    assert lines, f"no report; stderr:\n{err}"
    return proc.returncode, json.loads(lines[-1].removeprefix("REPORT "))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_current_message_and_releases_the_rest(sig: signal.Signals) -> None:
    proc = _start(concurrency=1, seconds=0.3)
    _wait_started(proc, 2)
    proc.send_signal(sig)
    code, report = _report(proc)
    assert code == 0
    assert not report["interrupted"]
    done = len(report["processed"])
    assert report["acked"] == done >= 1
    assert report["released"] == 40 - done
    assert report["ready"] == 40 - done  # nothing lost: every unprocessed message is back
    assert report["in_flight"] == 0


def test_sigterm_with_threads_finishes_in_flight_work() -> None:
    proc = _start(concurrency=4, seconds=0.4)
    _wait_started(proc, 4)
    proc.send_signal(signal.SIGTERM)
    code, report = _report(proc)
    assert code == 0
    done = len(report["processed"])
    assert report["acked"] == done >= 4
    assert report["ready"] + done == 40
    assert report["in_flight"] == 0


def test_second_signal_stops_at_once_without_acking_unfinished_work() -> None:
    proc = _start(concurrency=1, seconds=5.0)
    _wait_started(proc, 1)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # let the first signal be handled before the second (not waiting for work)
    proc.send_signal(signal.SIGTERM)
    code, report = _report(proc)
    assert code == 1
    assert report["interrupted"]
    assert report["processed"] == []
    assert report["acked"] == 0
    # The interrupted message stays leased (its lease brings it back); the 39 pulled but
    # never started are handed back at once.
    assert report["in_flight"] == 1
    assert report["released"] == 39 and report["ready"] == 39


def test_shutdown_timeout_bounds_the_graceful_stop() -> None:
    proc = _start(concurrency=1, seconds=10.0, shutdown_timeout=0.5)
    _wait_started(proc, 1)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, report = _report(proc)
    assert time.monotonic() - start < 8
    assert code == 1 and report["interrupted"] and report["acked"] == 0


def test_stop_before_run_ends_that_run_at_once_and_only_that_one() -> None:
    import attrs

    import pashq

    @attrs.define
    class Job(pashq.Message, type_name="pashq_tests.signals.job"):
        def process_message(self) -> None:
            pass

    pashq.configure({"queues": {"default": {"type": "memory"}}})
    try:
        pashq.queue().dispatch_many("jobs", [Job(), Job()])
        worker = pashq.Worker("jobs", install_signal_handlers=False)
        worker.stop()
        assert worker.run(until_empty=True).acked == 0
        assert pashq.queue().stats("jobs").ready == 2  # nothing pulled, nothing lost
        assert worker.run(until_empty=True).acked == 2  # the stop was for one run only
    finally:
        pashq.reset()
        pashq.registry.unregister("pashq_tests.signals.job")


def test_sigterm_while_pashq_work_starts_is_a_graceful_stop(tmp_path: Path) -> None:
    (tmp_path / "startup_app.py").write_text(
        "import attrs\nimport pashq\n\n\n"
        "@attrs.define\n"
        'class Job(pashq.Message, type_name="startup_app.job"):\n'
        "    n: int\n\n"
        "    def process_message(self) -> None:\n"
        '        with open("done.txt", "a", encoding="utf-8") as out:\n'
        '            out.write(f"{self.n}\\n")\n'
    )
    # Imported by `pashq work` while it starts: the signal arrives before any worker runs.
    (tmp_path / "stopper.py").write_text(
        "import os\nimport signal\n\nos.kill(os.getpid(), signal.SIGTERM)\n"
    )
    (tmp_path / "pashq.toml").write_text(
        '[queues.default]\ntype = "database"\nurl = "sqlite:///pashq.sqlite3"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "PASHQ_CONFIG"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    dispatch = (
        "import pashq, startup_app as a; pashq.queue().dispatch_many('jobs', [a.Job(1), a.Job(2)])"
    )
    sent = run("-c", dispatch)
    assert sent.returncode == 0, sent.stderr
    stopped = run("-m", "pashq", "work", "jobs", "--import", "startup_app", "--import", "stopper")
    assert stopped.returncode == 0, stopped.stderr
    assert "SIGTERM while starting" in stopped.stderr
    assert not (tmp_path / "done.txt").exists()  # stopped before it pulled anything
    drained = run("-m", "pashq", "work", "jobs", "--import", "startup_app", "--until-empty")
    assert drained.returncode == 0, drained.stderr
    assert sorted((tmp_path / "done.txt").read_text(encoding="utf-8").split()) == ["1", "2"]

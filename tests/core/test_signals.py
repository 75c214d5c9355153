"""SIGTERM/SIGINT: finish in-flight work, release the rest, exit 0; a second signal stops now."""

from __future__ import annotations

import json
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

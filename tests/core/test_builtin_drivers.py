"""The built-in sync, async and logger drivers, and the metrics middleware."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import attrs
import pytest

import pashq
from pashq import Message, MessageRejectedError
from pashq.testing import wait_for

seen: dict[str, list[str]] = {}
_lock = threading.Lock()


def _note(key: str, what: str) -> None:
    with _lock:
        seen.setdefault(key, []).append(what)


@attrs.define
class Note(Message, type_name="tests.builtin.note"):
    key: str
    fail_first: bool = False

    def process_message(self) -> None:
        first = self.key not in seen
        _note(self.key, threading.current_thread().name)
        if self.fail_first and first:
            raise RuntimeError("first attempt fails")


@attrs.define
class AsyncNote(Message, type_name="tests.builtin.async_note"):
    key: str

    async def process_message(self) -> None:
        await asyncio.sleep(0)
        _note(self.key, "async")


@attrs.define
class Refused(Message, type_name="tests.builtin.refused"):
    key: str

    def validate_message(self) -> bool:
        return False

    def process_message(self) -> None:
        _note(self.key, "ran")


def test_sync_driver_runs_the_message_inside_dispatch() -> None:
    pashq.configure({"queues": {"default": {"type": "sync"}}})
    key = uuid.uuid4().hex
    Note(key).dispatch()
    assert seen[key] == [threading.current_thread().name]
    AsyncNote(key).dispatch()
    assert seen[key][-1] == "async"


def test_sync_driver_raises_the_handler_exception_to_the_caller() -> None:
    pashq.configure({"queues": {"default": {"type": "sync"}}})
    with pytest.raises(RuntimeError, match="first attempt fails"):
        Note(uuid.uuid4().hex, fail_first=True).dispatch()


def test_sync_driver_rejects_invalid_messages() -> None:
    pashq.configure({"queues": {"default": {"type": "sync"}}})
    key = uuid.uuid4().hex
    with pytest.raises(MessageRejectedError, match="validate_message\\(\\) returned False"):
        Refused(key).dispatch()
    assert key not in seen


def test_async_driver_processes_in_the_background_and_retries() -> None:
    pashq.configure({"queues": {"default": {"type": "async", "retry_delay": 0.01}}})
    key = uuid.uuid4().hex
    Note(key, fail_first=True).dispatch()
    wait_for(lambda: len(seen.get(key, [])) == 2, timeout=10, what="retry to succeed")
    assert all(name.startswith("pashq-async") for name in seen[key])


def test_async_driver_dead_letters_invalid_messages_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pashq.configure({"queues": {"default": {"type": "async"}}})
    key = uuid.uuid4().hex
    with caplog.at_level(logging.WARNING, logger="pashq.worker"):
        Refused(key).dispatch()
        wait_for(lambda: pashq.queue().failed("default"), timeout=10)
        # The worker logs right after it dead-letters: wait for the record, not a sleep.
        wait_for(lambda: "validate_message() returned False" in caplog.text, timeout=10)
    assert key not in seen


def test_async_driver_drains_on_close() -> None:
    pashq.configure({"queues": {"default": {"type": "async"}}})
    key = uuid.uuid4().hex
    pashq.queue().dispatch_many("default", [Note(key) for _ in range(100)])
    pashq.close()
    assert len(seen[key]) == 100


def test_logger_driver_logs_queue_id_type_and_body(caplog: pytest.LogCaptureFixture) -> None:
    pashq.configure({"queues": {"default": {"type": "logger"}}})
    with caplog.at_level(logging.INFO, logger="pashq.drivers.logger"):
        message_id = Note("k-logged").dispatch("audit")
    (record,) = caplog.records
    text = record.getMessage()
    assert record.levelno == logging.INFO
    assert f"id={message_id}" in text
    assert "queue=audit" in text and "type=tests.builtin.note" in text
    assert '"key":"k-logged"' in text


def test_logger_driver_rejects_unknown_level() -> None:
    pashq.configure({"queues": {"default": {"type": "logger", "level": "LOUD"}}})
    with pytest.raises(pashq.ConfigError, match="'level' must be a logging level name"):
        pashq.queue()


def test_metrics_middleware_counts_the_data_path() -> None:
    pashq.configure({"queues": {"default": {"type": "memory", "plugins": ["metrics"]}}})
    key = uuid.uuid4().hex
    connection = pashq.queue()
    connection.dispatch_many("default", [Note(key) for _ in range(5)])
    pashq.Worker("default", poll_timeout=0.1).run(until_empty=True)
    metrics = connection.plugin_manager.get_plugin("pashq.plugin.metrics")
    counts = metrics.snapshot()["default"]
    assert counts["pushed"] == 5 and counts["pulled"] == 5 and counts["acked"] == 5
    assert counts["pushed_seconds"] > 0


_SYNC_IN_A_LOOP = """
import asyncio
import attrs
import pashq

@attrs.define
class Hello(pashq.Message, type_name="tests.sync_loop.hello"):
    n: int

    async def process_message(self) -> None:
        await asyncio.sleep(0)

pashq.configure({"queues": {"default": {"type": "sync"}}})

async def main() -> None:
    for n in range(300):
        Hello(n).dispatch()

asyncio.run(main())
pashq.close()
print("done")
"""


def test_sync_driver_inside_a_running_loop_leaks_no_event_loop(tmp_path: Path) -> None:
    """DOC_NOTES bug 6: 300 dispatches from async code, clean under ``python -W error``."""
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", _SYNC_IN_A_LOOP],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and "done" in proc.stdout, proc.stderr
    assert "Exception ignored" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr

"""Fork safety beyond the core's ForkContract: locks held by other threads at fork time."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from pashq.connection import Connection
from pashq.testing import wait_for

from .rabbitmq_test_messages import Recorded

pytestmark = pytest.mark.rabbitmq


def _exit_code_within(pid: int, timeout: float) -> int | None:
    """The child's exit code, or ``None`` (and the child killed) if it hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def test_child_dispatches_while_a_parent_thread_holds_the_driver_locks(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A thread holds the driver's and the link's locks while the process forks: the child
    (where the lock stays held forever) still dispatches and closes."""
    conn = connect()
    conn.dispatch(queue_name, Recorded("fork-lock", 1))
    driver = conn.driver
    link = driver.link
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with driver._lock, link._cond:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    try:
        assert held.wait(10)
        pid = os.fork()
        if pid == 0:  # the child: must not return into pytest
            code = 1
            try:
                conn.dispatch(queue_name, Recorded("fork-lock", 2))
                conn.close()
                code = 0
            finally:
                os._exit(code)
    finally:
        release.set()
        holder.join(10)
    assert _exit_code_within(pid, timeout=30) == 0
    wait_for(lambda: conn.stats(queue_name).ready == 2, timeout=10, what="both messages")


def test_parent_link_taken_before_fork_is_closed_in_the_child(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """A link object captured before the fork is the parent's: in the child it says it is
    closed (rather than waiting on an I/O thread that is not there), and the child's
    close leaves the parent's connection working."""
    conn = connect()
    conn.dispatch(queue_name, Recorded("fork-link", 1))
    inherited = conn.driver.link
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                inherited.submit(lambda: None)
            except Exception as exc:  # DriverError: the connection ... is closed
                code = 0 if "closed" in str(exc) else 2
            conn.close()
        finally:
            os._exit(code)
    assert _exit_code_within(pid, timeout=30) == 0
    conn.dispatch(queue_name, Recorded("fork-link", 2))
    wait_for(lambda: conn.stats(queue_name).ready == 2, timeout=10, what="both messages")

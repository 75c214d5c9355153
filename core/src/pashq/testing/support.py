"""Helpers for driver tests: the queue fixture's type, connections from a table, waiting."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from pashq.config import load_settings
from pashq.connection import Connection
from pashq.delivery import Delivery

__all__ = ["QueueUnderTest", "drain", "make_connection", "wait_for", "wait_until_blocked"]

T = TypeVar("T")


@attrs.define
class QueueUnderTest:
    """What a driver's ``queue_under_test`` fixture yields.

    :ivar connection: an open connection to the backend.
    :ivar name: a fresh, empty queue on it.
    :ivar open_connection: opens another, independent connection with the same options
        (used to simulate a consumer that crashes: it pulls, then is closed without acking).
    :ivar lease: the lease (visibility timeout) configured, in seconds, or ``None``.
    """

    connection: Connection
    name: str
    open_connection: Callable[[], Connection] | None = None
    lease: float | None = None


def make_connection(table: Mapping[str, Any], name: str = "contract") -> Connection:
    """Open a :class:`~pashq.Connection` from one ``[queues.<name>]`` table, outside the
    process-wide configuration."""
    settings = load_settings({"queues": {name: dict(table)}}, "<test>")
    return Connection(settings.connections[name])


def wait_for(
    predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def drain(
    connection: Connection, queue: str, expected: int, timeout: float = 20.0, ack: bool = True
) -> list[Delivery]:
    """Pull until ``expected`` deliveries arrived (or ``timeout``); ack them unless told not to."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    batch = connection.capabilities.batch_size
    while len(got) < expected and time.monotonic() < deadline:
        wait = max(0.0, min(1.0, deadline - time.monotonic()))
        deliveries = connection.hook.pashq_pull(queue=queue, max_messages=batch, timeout=wait)
        if deliveries:
            if ack:
                connection.hook.pashq_ack(queue=queue, deliveries=deliveries)
            got.extend(deliveries)
    return got


def _innermost(thread: threading.Thread) -> tuple[Any, int] | None:
    frame = sys._current_frames().get(thread.ident or -1)
    return None if frame is None else (frame.f_code, frame.f_lineno)


def wait_until_blocked(thread: threading.Thread, timeout: float = 5.0, looks: int = 3) -> bool:
    """Wait until ``thread`` sits in one blocking call (a ``Condition.wait``, ``select``, a
    socket read, a database client waiting for a notification ...): its innermost Python
    frame is at the same line on ``looks`` looks 20 ms apart, which a thread running
    Python code never is. Returns ``False`` after ``timeout`` (or when the thread ended),
    so a caller that only wants the thread past its start can go on."""
    deadline = time.monotonic() + timeout
    last: tuple[Any, int] | None = None
    same = 0
    while time.monotonic() < deadline and thread.is_alive():
        here = _innermost(thread)
        same = same + 1 if here is not None and here == last else 0
        if same >= looks - 1:
            return True
        last = here
        time.sleep(0.02)  # polling a condition, not waiting for work
    return False

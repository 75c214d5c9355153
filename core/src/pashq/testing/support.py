"""Helpers for driver tests: the queue fixture's type, connections from a table, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from pashq.config import load_settings
from pashq.connection import Connection
from pashq.delivery import Delivery

__all__ = ["QueueUnderTest", "drain", "make_connection", "wait_for"]

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

"""Queue names are checked by the driver once per name, at dispatch and at Worker start."""

from __future__ import annotations

import pytest

from pashq import QueueNameError, Worker, hookimpl
from pashq.testing import make_connection
from pashq.testing.messages import Recorded


class ShortNamesOnly:
    """A driver-side check, as a plugin: at most 10 characters; counts the calls."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    @hookimpl
    def pashq_check_queue_name(self, queue: str) -> str | None:
        self.asked.append(queue)
        return f"is {len(queue)} characters long; the most is 10" if len(queue) > 10 else None


def test_a_name_the_driver_refuses_fails_at_dispatch_naming_queue_connection_driver() -> None:
    conn = make_connection({"type": "memory"})
    conn.plugin_manager.register(ShortNamesOnly())
    with pytest.raises(QueueNameError) as caught:
        conn.dispatch("much-too-long-name", Recorded("k", 1))
    assert str(caught.value) == (
        "queue name 'much-too-long-name' cannot be used on connection 'contract' "
        "(driver 'memory'): it is 18 characters long; the most is 10"
    )
    assert isinstance(caught.value, ValueError)  # as the old empty-name check raised


def test_a_name_the_driver_refuses_fails_at_worker_start() -> None:
    conn = make_connection({"type": "memory"})
    conn.plugin_manager.register(ShortNamesOnly())
    worker = Worker(["ok", "much-too-long-name"], connection=conn, install_signal_handlers=False)
    with pytest.raises(QueueNameError, match="much-too-long-name"):
        worker.run(until_empty=True)


def test_each_name_is_checked_once_per_connection() -> None:
    conn = make_connection({"type": "memory"})
    check = ShortNamesOnly()
    conn.plugin_manager.register(check)
    for n in range(3):
        conn.dispatch("short", Recorded("k", n))
    assert check.asked == ["short"]


@pytest.mark.parametrize("name", ["", "a\x00b"])
def test_empty_names_and_nul_are_refused_by_the_core(name: str) -> None:
    conn = make_connection({"type": "memory"})
    with pytest.raises(QueueNameError):
        conn.dispatch(name, Recorded("k", 1))


def test_long_names_are_shortened_in_the_error() -> None:
    conn = make_connection({"type": "memory"})
    conn.plugin_manager.register(ShortNamesOnly())
    with pytest.raises(QueueNameError) as caught:
        conn.dispatch("q" * 300, Recorded("k", 1))
    assert "... (300 characters)" in str(caught.value)
    assert "q" * 100 not in str(caught.value)


@pytest.mark.parametrize("call", ["stats", "purge", "failed", "retry_failed", "purge_failed"])
def test_administration_checks_the_name_too(call: str) -> None:
    conn = make_connection({"type": "memory"})
    conn.plugin_manager.register(ShortNamesOnly())
    with pytest.raises(QueueNameError, match="much-too-long-name"):
        getattr(conn, call)("much-too-long-name")

"""``pashq_process`` wrappers and ``pashq.current()`` under the ``sync`` driver."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import attrs
import pytest

import pashq
from pashq import Delivery, Envelope, Message, MessageRejectedError, Outcome, Result, hookimpl
from pashq.connection import Connection
from pashq.testing import make_connection

seen: list[Any] = []


@attrs.define
class Job(Message, type_name="pashq_tests.sync_lifecycle.job"):
    """Records pashq.current(); fails with ValueError when told to, or is invalid."""

    fail: bool = False
    valid: bool = True

    def validate_message(self) -> bool:
        """Valid unless told otherwise."""
        return self.valid

    def process_message(self) -> None:
        """Record the context, then maybe fail."""
        seen.append(("handler", pashq.current()))
        if self.fail:
            raise ValueError("job failed")


class Recorder:
    """Records each delivery and its result; optionally replaces the decision."""

    def __init__(self, decide: Any = None) -> None:
        self.events: list[tuple[str, Outcome, BaseException | None]] = []
        self.decide = decide

    @hookimpl(wrapper=True)
    def pashq_process(
        self, delivery: Delivery, envelope: Envelope | None, message: Message | None
    ) -> Generator[None, Result, Result]:
        seen.append(("wrapper", pashq.current()))
        result = yield
        self.events.append((delivery.id, result.outcome, result.exception))
        return self.decide(result) if self.decide else result


@pytest.fixture
def conn() -> Iterator[Connection]:
    seen.clear()
    connection = make_connection({"type": "sync"}, name="inline")
    yield connection
    connection.close()


def test_wrapper_runs_around_each_sync_dispatch(conn: Connection) -> None:
    recorder = Recorder()
    conn.plugin_manager.register(recorder)  # registered after connect: still seen
    first = conn.dispatch("jobs", Job(), headers={"tenant": "acme"})
    second = conn.dispatch("jobs", Job())
    assert recorder.events == [(first, Outcome.ACK, None), (second, Outcome.ACK, None)]
    wrapper, handler = seen[0][1], seen[1][1]
    assert wrapper == handler
    assert (handler.id, handler.queue, handler.connection, handler.attempts) == (
        first,
        "jobs",
        "inline",
        1,
    )
    assert dict(handler.headers) == {"tenant": "acme"}


def test_handler_exception_reaches_the_caller_after_the_wrapper_saw_it(
    conn: Connection,
) -> None:
    recorder = Recorder()
    conn.plugin_manager.register(recorder)
    with pytest.raises(ValueError, match="job failed"):
        conn.dispatch("jobs", Job(fail=True))
    [(_, outcome, exception)] = recorder.events
    assert outcome is Outcome.RETRY and isinstance(exception, ValueError)


def test_wrapper_can_turn_a_failure_into_an_ack(conn: Connection) -> None:
    conn.plugin_manager.register(
        Recorder(lambda r: attrs.evolve(r, outcome=Outcome.ACK, exception=None))
    )
    conn.dispatch("jobs", Job(fail=True))  # does not raise


def test_invalid_message_passes_the_wrapper_and_is_rejected(conn: Connection) -> None:
    recorder = Recorder()
    conn.plugin_manager.register(recorder)
    with pytest.raises(MessageRejectedError, match=r"validate_message\(\) returned False"):
        conn.dispatch("jobs", Job(valid=False))
    assert [e[1] for e in recorder.events] == [Outcome.DEAD]


def test_wrapper_refusing_a_success_rejects_the_dispatch(conn: Connection) -> None:
    conn.plugin_manager.register(
        Recorder(lambda r: attrs.evolve(r, outcome=Outcome.DEAD, reason="quota exceeded"))
    )
    with pytest.raises(MessageRejectedError, match="rejected: quota exceeded"):
        conn.dispatch("jobs", Job())

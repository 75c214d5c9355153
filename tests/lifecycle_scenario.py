"""A middleware plugin that uses only the public hooks, and the scenario the core, database
and RabbitMQ tests run with it: one ack, one retry then ack, one dead letter, one
undecodable delivery (issue 9's "done means")."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import attrs

import pashq
from pashq import Delivery, DispatchItem, Envelope, Message, OutgoingMessage, Result, hookimpl
from pashq.connection import Connection


@attrs.define
class Fine(Message, type_name="pashq_tests.lifecycle.fine"):
    """Succeeds."""

    n: int

    def process_message(self) -> None:
        """Nothing to do."""


@attrs.define
class FailsOnce(Message, type_name="pashq_tests.lifecycle.fails_once"):
    """Fails on its first attempt, succeeds on the second."""

    retry_delay = 0.05
    n: int

    def process_message(self) -> None:
        """Raise on attempt 1."""
        if pashq.current().attempts == 1:
            raise RuntimeError("first attempt fails")


@attrs.define
class Rejected(Message, type_name="pashq_tests.lifecycle.rejected"):
    """Rejected by validation: dead-lettered."""

    n: int

    def validate_message(self) -> bool:
        """Never valid."""
        return False


@attrs.frozen
class ProcessEvent:
    """What the recorder saw for one delivery."""

    id: str
    outcome: str
    attempts: int
    trace: str | None
    decoded: bool


class Recorder:
    """Adds a ``trace-id`` header at dispatch; records dispatch batches and processed
    deliveries with their outcome and the attempt number from ``pashq.current()``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dispatches: list[list[tuple[str, str]]] = []
        self.processed: list[ProcessEvent] = []

    @hookimpl(wrapper=True)
    def pashq_dispatch(
        self, queue: str, messages: Sequence[DispatchItem], options: Mapping[str, Any]
    ) -> Generator[None, list[str], list[str]]:
        added = []
        for item in messages:
            item.headers["trace-id"] = uuid.uuid4().hex
            added.append((item.id, item.headers["trace-id"]))
        ids = yield
        with self.lock:
            self.dispatches.append(added)
        return ids

    @hookimpl(wrapper=True)
    def pashq_process(
        self, delivery: Delivery, envelope: Envelope | None, message: Message | None
    ) -> Generator[None, Result, Result]:
        context = pashq.current()
        result = yield
        event = ProcessEvent(
            delivery.id,
            result.outcome.value,
            context.attempts,
            context.headers.get("trace-id"),
            envelope is not None,
        )
        with self.lock:
            self.processed.append(event)
        return result


def run_scenario(conn: Connection, queue: str) -> Recorder:
    """Register a :class:`Recorder` on ``conn``, dispatch the scenario to ``queue`` and
    drain it with a worker; return the recorder."""
    recorder = Recorder()
    conn.plugin_manager.register(recorder)
    conn.dispatch_many(queue, [Fine(1), FailsOnce(2)])
    conn.dispatch(queue, Rejected(3))
    junk = OutgoingMessage(uuid.uuid4().hex, "junk", b"not an envelope")
    conn.hook.pashq_push(queue=queue, messages=[junk], options={})
    pashq.Worker(queue, connection=conn, install_signal_handlers=False).run(until_empty=True)
    return recorder


def check_scenario(recorder: Recorder) -> None:
    """Assert what the recorder must have seen."""
    assert [len(batch) for batch in recorder.dispatches] == [2, 1]
    traces = {mid: trace for batch in recorder.dispatches for mid, trace in batch}
    seen = sorted(
        (traces.get(e.id, "?"), e.outcome, e.attempts, e.trace, e.decoded)
        for e in recorder.processed
        if e.decoded
    )
    ids = [mid for batch in recorder.dispatches for mid, _ in batch]
    fine, fails_once, rejected = ids
    expected = sorted(
        [
            (traces[fine], "ack", 1, traces[fine], True),
            (traces[fails_once], "retry", 1, traces[fails_once], True),
            (traces[fails_once], "ack", 2, traces[fails_once], True),
            (traces[rejected], "dead", 1, traces[rejected], True),
        ]
    )
    assert seen == expected
    undecodable = [e for e in recorder.processed if not e.decoded]
    assert [(e.outcome, e.attempts, e.trace) for e in undecodable] == [("dead", 1, None)]
    assert len(recorder.processed) == 5

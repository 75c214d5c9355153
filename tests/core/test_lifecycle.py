"""pashq_dispatch and pashq_process wrappers, envelope headers and pashq.current() on the
memory driver (the same scenario runs on PostgreSQL and RabbitMQ in their suites)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any

import attrs
import pytest
from lifecycle_scenario import check_scenario, run_scenario

import pashq
from pashq import (
    Delivery,
    DispatchItem,
    Envelope,
    EnvelopeError,
    Message,
    Outcome,
    PashqError,
    Result,
    Worker,
    hookimpl,
)
from pashq.connection import Connection
from pashq.testing import make_connection

seen: list[Any] = []


@attrs.define
class Note(Message, type_name="pashq_tests.lifecycle.note"):
    """Records what pashq.current() says."""

    text: str

    def process_message(self) -> None:
        """Record the context."""
        seen.append(pashq.current())


@attrs.define
class AsyncNote(Message, type_name="pashq_tests.lifecycle.async_note"):
    """Records the context from an async handler, after sleeping a while."""

    pause: float

    async def process_message(self) -> None:
        """Sleep, then record."""
        await asyncio.sleep(self.pause)
        seen.append(pashq.current())


@attrs.define
class Boom(Message, type_name="pashq_tests.lifecycle.boom"):
    """Always fails."""

    max_attempts = 5
    n: int

    def process_message(self) -> None:
        """Fail."""
        raise ValueError("boom")


@pytest.fixture
def conn() -> Iterator[Connection]:
    seen.clear()
    connection = make_connection({"type": "memory"})
    yield connection
    connection.close()


def _drain(conn: Connection, queue: str = "q", **kwargs: Any) -> pashq.WorkerStats:
    return Worker(queue, connection=conn, install_signal_handlers=False, **kwargs).run(
        until_empty=True
    )


def test_recorder_sees_every_dispatch_batch_and_every_outcome_on_memory(conn: Connection) -> None:
    check_scenario(run_scenario(conn, "lifecycle"))


def test_dispatch_headers_reach_the_handler(conn: Connection) -> None:
    conn.dispatch("q", Note("x"), headers={"tenant": "acme", "trace.id": "t-1"})
    _drain(conn)
    assert dict(seen[0].headers) == {"tenant": "acme", "trace.id": "t-1"}


def test_message_dispatch_takes_headers(conn: Connection) -> None:
    ids = conn.dispatch_many("q", [Note("a"), Note("b")], headers={"batch": "7"})
    _drain(conn)
    assert sorted(c.id for c in seen) == sorted(ids)
    assert [dict(c.headers) for c in seen] == [{"batch": "7"}, {"batch": "7"}]


@pytest.mark.parametrize(
    ("headers", "text"),
    [
        ({"pashq-attempts": "1"}, "reserved"),
        ({"PASHQ-x": "1"}, "reserved"),
        ({"n": 1}, "str values"),
        ({"bad name": "1"}, "header name"),
        ({"big": "x" * 8193}, "at most 8192"),
        ({f"h{i}": "" for i in range(65)}, "the most is 64"),
        (["a"], "mapping"),
    ],
)
def test_dispatch_refuses_headers_that_break_the_rules(
    conn: Connection, headers: Any, text: str
) -> None:
    with pytest.raises(EnvelopeError, match=text):
        conn.dispatch("q", Note("x"), headers=headers)
    assert conn.stats("q").ready == 0


def test_current_gives_id_queue_connection_attempts_created_at_and_deadline(
    conn: Connection,
) -> None:
    before = time.time()
    message_id = conn.dispatch("q", Note("x"))
    _drain(conn, time_limit=30.0)
    context = seen[0]
    assert (context.id, context.queue, context.connection, context.attempts) == (
        message_id,
        "q",
        "contract",
        1,
    )
    assert context.created_at.tzinfo is not None
    assert abs(context.created_at.timestamp() - before) < 5
    assert context.deadline is not None and 0 < context.time_left() <= 30.0


def test_current_without_time_limit_has_no_deadline(conn: Connection) -> None:
    conn.dispatch("q", Note("x"))
    _drain(conn)
    assert seen[0].deadline is None and seen[0].time_left() is None


def test_current_outside_a_handler_raises() -> None:
    with pytest.raises(PashqError, match="outside a message handler"):
        pashq.current()


def test_current_in_async_handlers_is_per_task(conn: Connection) -> None:
    ids = conn.dispatch_many("q", [AsyncNote(0.2), AsyncNote(0.0)])
    _drain(conn, concurrency=2)
    assert sorted(c.id for c in seen) == sorted(ids)
    assert seen[0].id == ids[1]  # the short one finished first, with its own context


class Timing:
    """A process wrapper that times the handler."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    @hookimpl(wrapper=True)
    def pashq_process(
        self, delivery: Delivery, envelope: Envelope | None, message: Message | None
    ) -> Generator[None, Result, Result]:
        started = time.perf_counter()
        result = yield
        self.seconds.append(time.perf_counter() - started)
        return result


@pytest.mark.parametrize("concurrency", [1, 2])
def test_process_wrapper_timing_covers_an_async_handler(conn: Connection, concurrency: int) -> None:
    timing = Timing()
    conn.plugin_manager.register(timing)
    conn.dispatch("q", AsyncNote(0.3))
    _drain(conn, concurrency=concurrency)
    assert len(timing.seconds) == 1 and timing.seconds[0] >= 0.3


class DeadOnValueError:
    """Turns a ValueError into a dead letter at once (a retry policy override)."""

    @hookimpl(wrapper=True)
    def pashq_process(self, delivery: Delivery) -> Generator[None, Result, Result]:
        result = yield
        if isinstance(result.exception, ValueError):
            return attrs.evolve(result, outcome=Outcome.DEAD, reason="no retry for ValueError")
        return result


def test_process_wrapper_turns_an_exception_into_a_dead_letter(conn: Connection) -> None:
    conn.plugin_manager.register(DeadOnValueError())
    conn.dispatch("q", Boom(1))
    _drain(conn)
    [dead] = conn.failed("q")
    assert dead.attempts == 1 and dead.reason == "no retry for ValueError"


class RetryLater:
    """Turns the first failure into a retry with its own delay."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    @hookimpl(wrapper=True)
    def pashq_process(self, delivery: Delivery) -> Generator[None, Result, Result]:
        result = yield
        if result.outcome is Outcome.DEAD and delivery.attempts == 1:
            self.delays.append(0.2)
            return attrs.evolve(result, outcome=Outcome.RETRY, delay=0.2)
        return result


def test_process_wrapper_turns_a_dead_letter_into_a_retry_with_its_delay(
    conn: Connection,
) -> None:
    conn.plugin_manager.register(DeadOnValueError())
    conn.plugin_manager.register(RetryLater())  # registered last: the outermost wrapper
    conn.dispatch("q", Boom(1))
    started = time.monotonic()
    _drain(conn)
    [dead] = conn.failed("q")
    assert dead.attempts == 2 and time.monotonic() - started >= 0.2


class Raising:
    @hookimpl(wrapper=True)
    def pashq_process(self) -> Generator[None, Result, Result]:
        raise RuntimeError("rate limited")
        yield  # pragma: no cover


def test_process_wrapper_raising_counts_as_a_failed_attempt(conn: Connection) -> None:
    conn.plugin_manager.register(Raising())
    conn.dispatch("q", Note("x"))
    stats = Worker("q", connection=conn, install_signal_handlers=False, max_messages=1).run()
    assert seen == []  # the handler did not run
    assert stats.retried == 1


class NotAWrapper:
    @hookimpl
    def pashq_process(self) -> None:
        return None


def test_a_process_hook_that_is_not_a_wrapper_is_a_config_error(conn: Connection) -> None:
    conn.plugin_manager.register(NotAWrapper())
    with pytest.raises(pashq.ConfigError, match="must be a wrapper"):
        _drain(conn)


class Refuse:
    @hookimpl(wrapper=True)
    def pashq_dispatch(
        self, queue: str, messages: Sequence[DispatchItem], options: Mapping[str, Any]
    ) -> Generator[None, list[str], list[str]]:
        if any("secret" in str(item.envelope.body) for item in messages):
            raise PashqError(f"refusing to dispatch a secret to {queue!r}")
        return (yield)


def test_dispatch_wrapper_can_refuse_a_batch(conn: Connection) -> None:
    conn.plugin_manager.register(Refuse())
    with pytest.raises(PashqError, match="refusing"):
        conn.dispatch_many("q", [Note("ok"), Note("secret")])
    assert conn.stats("q").ready == 0


class Timed:
    def __init__(self) -> None:
        self.pushed_inside: list[bool] = []
        self.pushing = False

    @hookimpl(wrapper=True)
    def pashq_dispatch(self) -> Generator[None, list[str], list[str]]:
        self.pushing = True
        try:
            return (yield)
        finally:
            self.pushing = False

    @hookimpl(wrapper=True)
    def pashq_push(self) -> Generator[None, list[str], list[str]]:
        self.pushed_inside.append(self.pushing)
        return (yield)


def test_dispatch_wrapper_surrounds_the_push(conn: Connection) -> None:
    timed = Timed()
    conn.plugin_manager.register(timed)
    conn.dispatch_many("q", [Note("a"), Note("b")])
    assert timed.pushed_inside == [True]


class Reserved:
    @hookimpl(wrapper=True)
    def pashq_dispatch(
        self, messages: Sequence[DispatchItem]
    ) -> Generator[None, list[str], list[str]]:
        for item in messages:
            item.headers["pashq-plugin"] = "yes"
        return (yield)


def test_plugins_may_set_reserved_headers(conn: Connection) -> None:
    conn.plugin_manager.register(Reserved())
    conn.dispatch("q", Note("x"))
    _drain(conn)
    assert dict(seen[0].headers) == {"pashq-plugin": "yes"}


@attrs.define
class Urgent(Message, type_name="pashq_tests.lifecycle.urgent", priority=7):
    """Class priority 7."""

    text: str

    def process_message(self) -> None:
        """Record the context."""
        seen.append(pashq.current())


def test_class_priority_is_the_default_and_dispatch_priority_overrides_it(
    conn: Connection,
) -> None:
    low = conn.dispatch("q", Note("low"))
    urgent = conn.dispatch("q", Urgent("urgent"))
    lowered = conn.dispatch("q", Urgent("lowered"), priority=0)
    _drain(conn)
    assert [c.id for c in seen] == [urgent, low, lowered]


def test_memory_retried_dead_letter_keeps_its_priority(conn: Connection) -> None:
    """A dead letter of priority 7 retried behind a waiting priority-0 message goes first."""
    urgent = conn.dispatch("q", Urgent("urgent"))
    (delivery,) = conn.hook.pashq_pull(queue="q", max_messages=10, timeout=0)
    conn.hook.pashq_dead_letter(queue="q", delivery=delivery, reason="x", traceback=None)
    low = conn.dispatch("q", Note("low"))
    assert conn.hook.pashq_failed_retry(queue="q", ids=[urgent]) == 1
    _drain(conn)
    assert [c.id for c in seen] == [urgent, low]


@pytest.mark.parametrize("priority", [-1, 10, 1.5, True, "3"])
def test_priority_out_of_range_is_refused(conn: Connection, priority: Any) -> None:
    with pytest.raises(ValueError, match="priority must be an int from 0 to 9"):
        conn.dispatch("q", Note("x"), priority=priority)


def test_class_priority_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="priority must be an int from 0 to 9"):

        class Bad(Message, type_name="pashq_tests.lifecycle.bad_priority", priority=12):
            pass


def test_driver_without_priorities_refuses_a_class_priority() -> None:
    conn = make_connection({"type": "sync"})
    try:
        with pytest.raises(pashq.UnsupportedError, match="no message priorities"):
            conn.dispatch("q", Urgent("x"))
    finally:
        conn.close()


class Observer:
    """A ``pashq_delivery_observer`` that records its calls (and may fail in them)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.started: list[str] = []
        self.finished: list[tuple[str, str | None, Outcome | None, float]] = []

    @hookimpl
    def pashq_delivery_observer(self) -> Any:
        return _Calls(self)


class _Calls:
    def __init__(self, record: Observer) -> None:
        self.record = record

    def started(self, delivery: Delivery) -> None:
        self.record.started.append(delivery.id)
        if self.record.fail:
            raise RuntimeError("observer broke")

    def finished(
        self, delivery: Delivery, envelope: Envelope | None, result: Result | None, seconds: float
    ) -> None:
        self.record.finished.append(
            (
                delivery.id,
                envelope.type if envelope else None,
                result.outcome if result else None,
                seconds,
            )
        )
        if self.record.fail:
            raise RuntimeError("observer broke")


def test_delivery_observer_sees_every_delivery_run_or_not(conn: Connection) -> None:
    observer = Observer()
    conn.plugin_manager.register(observer)
    ok = conn.dispatch("q", Note("hi"))
    later = conn.dispatch("q", AsyncNote(0.01))
    failing = conn.dispatch("q", Boom(1))
    conn.hook.pashq_push(
        queue="q",
        messages=[pashq.OutgoingMessage("poison", "nobody.knows", b"not json")],
        options={},
    )
    _drain(conn, max_messages=4)
    assert sorted(observer.started) == sorted([ok, later, failing, "poison"])
    by_id = {entry[0]: entry for entry in observer.finished}
    assert by_id[ok][1:3] == ("pashq_tests.lifecycle.note", Outcome.ACK)
    assert by_id[later][1:3] == ("pashq_tests.lifecycle.async_note", Outcome.ACK)
    assert by_id[later][3] >= 0.01  # the handler's time
    assert by_id[failing][1:3] == ("pashq_tests.lifecycle.boom", Outcome.RETRY)
    assert by_id["poison"][1:] == (None, Outcome.DEAD, 0.0)  # settled without running


def test_a_failing_delivery_observer_changes_no_decision(
    conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    observer = Observer(fail=True)
    conn.plugin_manager.register(observer)
    conn.dispatch_many("q", [Note("a"), Note("b")])
    stats = _drain(conn)
    assert stats.acked == 2
    assert len(observer.finished) == 2
    assert "a delivery observer failed in started(): RuntimeError: observer broke" in caplog.text
    assert "a delivery observer failed in finished(): RuntimeError: observer broke" in caplog.text

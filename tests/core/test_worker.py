"""The worker's delivery contract on the memory driver: retries, backoff, handlers, leases."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from typing import Any

import attrs
import pytest

import pashq
from pashq import Message, UnsupportedError, Worker, registry
from pashq.config import RetryPolicy
from pashq.retry import backoff_delay, policy_for
from pashq.testing import make_connection, wait_for

calls: dict[str, list[float]] = {}
_lock = threading.Lock()


def _record(key: str) -> None:
    with _lock:
        calls.setdefault(key, []).append(time.monotonic())


@attrs.define
class Job(Message, type_name="tests.worker.job"):
    key: str
    fail_times: int = 0

    def process_message(self) -> None:
        _record(self.key)
        if len(calls[self.key]) <= self.fail_times:
            raise ValueError(f"failure {len(calls[self.key])}")


@attrs.define
class AsyncJob(Message, type_name="tests.worker.async_job"):
    key: str

    async def validate_message(self) -> bool:
        await asyncio.sleep(0)
        return True

    async def process_message(self) -> None:
        await asyncio.sleep(0.001)
        _record(self.key)


@attrs.define
class Slow(Message, type_name="tests.worker.slow"):
    key: str
    seconds: float

    def process_message(self) -> None:
        time.sleep(self.seconds)
        _record(self.key)


@attrs.define
class Tight(Message, type_name="tests.worker.tight"):
    key: str
    max_attempts = 2
    retry_delay = 0.0

    def process_message(self) -> None:
        _record(self.key)
        raise RuntimeError("tight")


@pytest.fixture
def memory() -> pashq.Connection:
    pashq.configure(
        {
            "queues": {
                "default": {
                    "type": "memory",
                    "retry_delay": 0.01,
                    "retry_delay_max": 0.05,
                    "lease": 1.0,
                }
            }
        }
    )
    return pashq.queue()


def _key() -> str:
    return uuid.uuid4().hex


def test_backoff_is_full_jitter_within_exponential_ceiling() -> None:
    policy = RetryPolicy(max_attempts=10, retry_delay=1.0, retry_delay_max=30.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (9, 30.0)]:
        delays = [backoff_delay(attempt, policy, rng) for _ in range(500)]
        assert min(delays) >= 0.0
        assert max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # the range is used, not a constant


def test_class_retry_settings_override_the_connection() -> None:
    connection_policy = RetryPolicy(7, 3.0, 9.0)
    assert policy_for(Tight, connection_policy) == RetryPolicy(2, 0.0, 9.0)
    assert policy_for(Job, connection_policy) == connection_policy


def test_message_failing_twice_succeeds_on_third_attempt(memory: pashq.Connection) -> None:
    key = _key()
    Job(key, fail_times=2).dispatch()
    stats = Worker("default", poll_timeout=0.1).run(until_empty=True)
    assert len(calls[key]) == 3
    assert (stats.acked, stats.retried, stats.dead_lettered) == (1, 2, 0)
    assert memory.failed("default") == []


def test_retries_wait_for_the_backoff(memory: pashq.Connection) -> None:
    pashq.configure(
        {"queues": {"default": {"type": "memory", "retry_delay": 0.2, "retry_delay_max": 0.2}}}
    )
    key = _key()
    Job(key, fail_times=1).dispatch()
    random.seed(3)
    Worker("default", poll_timeout=0.1).run(until_empty=True)
    first, second = calls[key]
    assert second - first <= 0.2 + 1.0  # never beyond the ceiling (+ scheduling slack)


def test_exhausted_retries_dead_letter_with_traceback(memory: pashq.Connection) -> None:
    key = _key()
    message_id = Tight(key).dispatch()
    stats = Worker("default", poll_timeout=0.1).run(until_empty=True)
    assert len(calls[key]) == 2
    assert stats.dead_lettered == 1
    (dead,) = memory.failed("default")
    assert dead.id == message_id
    assert dead.attempts == 2
    assert dead.reason == "failed 2 time(s), last: RuntimeError: tight"
    assert dead.traceback and "RuntimeError: tight" in dead.traceback


def test_async_handlers_run_on_an_event_loop(memory: pashq.Connection) -> None:
    key = _key()
    memory.dispatch_many("default", [AsyncJob(key) for _ in range(20)])
    stats = Worker("default", poll_timeout=0.1).run(until_empty=True)
    assert len(calls[key]) == 20 and stats.acked == 20


def test_async_handlers_with_threads(memory: pashq.Connection) -> None:
    key = _key()
    memory.dispatch_many("default", [AsyncJob(key) for _ in range(30)])
    Worker("default", concurrency=3, poll_timeout=0.1).run(until_empty=True)
    assert len(calls[key]) == 30


def test_concurrency_runs_handlers_in_parallel(memory: pashq.Connection) -> None:
    key = _key()
    memory.dispatch_many("default", [Slow(key, 0.3) for _ in range(4)])
    start = time.monotonic()
    Worker("default", concurrency=4, poll_timeout=0.1).run(until_empty=True)
    assert len(calls[key]) == 4
    assert time.monotonic() - start < 1.1  # 4 x 0.3 s in sequence would be 1.2 s


def test_heartbeat_keeps_long_work_from_being_delivered_twice(memory: pashq.Connection) -> None:
    key = _key()
    Slow(key, 2.5).dispatch()  # lease is 1 s: the heartbeat must extend it
    Worker("default", poll_timeout=0.1, concurrency=2).run(until_empty=True)
    assert len(calls[key]) == 1
    assert memory.stats("default").in_flight == 0


def test_max_messages_stops_the_worker(memory: pashq.Connection) -> None:
    key = _key()
    memory.dispatch_many("default", [Job(key) for _ in range(10)])
    stats = Worker("default", max_messages=4, batch_size=3, poll_timeout=0.1).run()
    assert stats.acked == 4 and len(calls[key]) == 4
    assert memory.stats("default").ready == 6


def test_stop_from_another_thread_releases_unstarted_messages(memory: pashq.Connection) -> None:
    key = _key()
    memory.dispatch_many("default", [Slow(key, 0.05) for _ in range(50)])
    worker = Worker("default", poll_timeout=0.1, batch_size=50, install_signal_handlers=False)
    threading.Timer(0.3, worker.stop).start()
    stats = worker.run()
    done = len(calls[key])
    assert 0 < done < 50
    assert stats.acked == done and stats.released == 50 - done
    assert memory.stats("default").ready == 50 - done  # nothing lost


def test_worker_reads_several_queues(memory: pashq.Connection) -> None:
    key = _key()
    Job(key).dispatch("a")
    Job(key).dispatch("b")
    Worker(["a", "b"], poll_timeout=0.1).run(until_empty=True)
    assert len(calls[key]) == 2


def test_worker_refuses_drivers_with_nothing_to_consume() -> None:
    pashq.configure({"queues": {"default": {"type": "logger"}}})
    with pytest.raises(UnsupportedError, match="nothing for a worker to consume"):
        Worker("default").run()


def test_delay_on_a_driver_without_delays_is_refused() -> None:
    pashq.configure({"queues": {"default": {"type": "sync"}}})
    with pytest.raises(UnsupportedError, match="cannot delay messages"):
        Job(_key()).dispatch(delay=5)


def test_delayed_dispatch_is_not_processed_early(memory: pashq.Connection) -> None:
    key = _key()
    Job(key).dispatch(delay=0.5)
    assert memory.stats("default").delayed == 1
    dispatched = time.monotonic()
    Worker("default", poll_timeout=0.2, max_messages=1).run()
    assert calls[key][0] - dispatched >= 0.45


def test_adispatch_does_not_block_the_event_loop(memory: pashq.Connection) -> None:
    key = _key()

    async def main() -> list[str]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        ids = [await Job(key).adispatch()]
        ids += await memory.adispatch_many("default", [Job(key), Job(key)])
        task.cancel()
        assert ticks > 0
        return ids

    ids = asyncio.run(main())
    assert len(set(ids)) == 3
    assert memory.stats("default").ready == 3


def test_invalid_worker_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one queue"):
        Worker([])
    with pytest.raises(ValueError, match="concurrency"):
        Worker("q", concurrency=0)


def test_wait_for_fails_after_timeout() -> None:
    with pytest.raises(AssertionError, match="timed out"):
        wait_for(lambda: False, timeout=0.05, what="never")


def test_message_redelivered_past_max_attempts_is_dead_lettered_unrun(
    memory: pashq.Connection,
) -> None:
    # A worker that dies mid-message never gets to count the failure: the delivery count
    # alone must stop the crash loop.
    key = _key()
    Tight(key).dispatch()
    hook = memory.hook
    for _ in range(2):  # two deliveries "lost" to crashed workers
        (delivery,) = hook.pashq_pull(queue="default", max_messages=1, timeout=1)
        hook.pashq_nack(queue="default", deliveries=[delivery], delay=0)
    stats = Worker("default", poll_timeout=0.1).run(until_empty=True)
    assert key not in calls
    assert stats.dead_lettered == 1
    (dead,) = memory.failed("default")
    assert "more than max_attempts=2" in dead.reason


def test_async_driver_has_nothing_for_pashq_work() -> None:
    pashq.configure({"queues": {"default": {"type": "async"}}})
    with pytest.raises(UnsupportedError, match="nothing for a worker to consume"):
        Worker("default").run()


def test_sync_driver_runs_async_handlers_inside_a_running_loop() -> None:
    pashq.configure({"queues": {"default": {"type": "sync"}}})
    key = _key()

    async def main() -> None:
        AsyncJob(key).dispatch()

    asyncio.run(main())
    assert len(calls[key]) == 1


@attrs.define
class Exits(Message, type_name="tests.worker.exits"):
    key: str
    exit_on: int

    def process_message(self) -> None:
        _record(self.key)
        if len(calls[self.key]) == self.exit_on:
            raise SystemExit(3)


def test_system_exit_in_handler_keeps_acks_of_finished_messages(
    memory: pashq.Connection,
) -> None:
    key = _key()
    memory.dispatch_many("default", [Exits(key, exit_on=3) for _ in range(5)])
    worker = Worker("default", poll_timeout=0.1, install_signal_handlers=False)
    with pytest.raises(SystemExit):
        worker.run(until_empty=True)
    stats = memory.stats("default")
    assert len(calls[key]) == 3
    # Two finished and acked; the one that exited and the two unstarted stay leased.
    assert stats.ready + stats.in_flight == 3


def test_immediate_stop_with_threads_releases_queued_messages(memory: pashq.Connection) -> None:
    key = _key()
    memory.dispatch_many("default", [Slow(key, 0.5) for _ in range(8)])
    worker = Worker("default", concurrency=2, poll_timeout=0.1, install_signal_handlers=False)
    threading.Timer(0.2, lambda: worker.stop(immediate=True)).start()
    stats = worker.run()
    # Two were running (not acked, back after their lease); the rest were handed back.
    assert stats.acked == 0
    assert stats.released == 2
    assert memory.stats("default").ready == 6


@attrs.define
class Ordered(Message, type_name="tests.worker.ordered"):
    key: str
    group: str
    n: int
    fail_first: bool = False
    group_by = "group"

    def process_message(self) -> None:
        time.sleep(random.uniform(0, 0.01))
        with _lock:
            seen = calls.setdefault(f"{self.key}-{self.group}-tries", [])
            seen.append(self.n)
            if self.fail_first and seen.count(self.n) == 1:
                raise RuntimeError("first try fails")
            calls.setdefault(f"{self.key}-{self.group}", []).append(self.n)


def test_threads_keep_the_order_of_a_fifo_group(memory: pashq.Connection) -> None:
    key = _key()
    messages = [Ordered(key, g, n) for n in range(15) for g in "abc"]
    memory.dispatch_many("default", messages)
    Worker("default", concurrency=4, batch_size=45, poll_timeout=0.1).run(until_empty=True)
    for group in "abc":
        assert calls[f"{key}-{group}"] == list(range(15))


def test_later_group_messages_are_handed_back_after_a_failure(memory: pashq.Connection) -> None:
    key = _key()
    memory.dispatch_many(
        "default",
        [Ordered(key, "g", 0, fail_first=True), Ordered(key, "g", 1), Ordered(key, "g", 2)],
    )
    stats = Worker("default", batch_size=3, poll_timeout=0.1).run(until_empty=True)
    # The first pass stopped the group at the failure and released 1 and 2 unrun.
    assert calls[f"{key}-g-tries"][:1] == [0]
    assert stats.released >= 2
    assert sorted(calls[f"{key}-g"]) == [0, 1, 2]


def test_a_class_built_by_another_class_set_message_runs_under_its_own_policy() -> None:
    @attrs.define
    class Parcel(pashq.Message, type_name="tests.worker.parcel"):
        weight: int

        @classmethod
        def set_message(cls, value: Any) -> pashq.Message:
            return Fragile(value["weight"])

    @attrs.define
    class Fragile(Parcel, type_name="tests.worker.fragile"):
        max_attempts = 1  # its own policy: the first failure is the last

        def process_message(self) -> None:
            raise RuntimeError("broken")

    connection = make_connection({"type": "memory"}, name="policy")
    try:
        connection.dispatch("q", Parcel(3))
        stats = pashq.Worker(
            "q", connection=connection, max_messages=1, install_signal_handlers=False
        ).run()
        assert (stats.dead_lettered, stats.retried) == (1, 0)
    finally:
        connection.close()
        registry.unregister("tests.worker.parcel")
        registry.unregister("tests.worker.fragile")

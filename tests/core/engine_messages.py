"""Message classes for the worker-engine tests (also imported by their subprocesses)."""

from __future__ import annotations

import asyncio
import collections
import threading
import time

import attrs

from pashq import Message

_lock = threading.Lock()
runs: collections.Counter[str] = collections.Counter()
peak: dict[str, int] = collections.defaultdict(int)
_now: dict[str, int] = collections.defaultdict(int)
threads_seen: list[int] = []
raised: list[type[BaseException]] = []  # what interrupted a Spins handler
gate = threading.Event()


def count(key: str) -> int:
    """How many handlers of ``key`` ran (or started)."""
    with _lock:
        return runs[key]


def _enter(key: str) -> None:
    with _lock:
        runs[key] += 1
        _now[key] += 1
        peak[key] = max(peak[key], _now[key])
        threads_seen.append(threading.active_count())


def _leave(key: str) -> None:
    with _lock:
        _now[key] -= 1


@attrs.define
class Quick(Message, type_name="tests.engine.quick"):
    """Does nothing but count."""

    key: str
    n: int = 0

    def process_message(self) -> None:
        _enter(self.key)
        _leave(self.key)


@attrs.define
class Sleeps(Message, type_name="tests.engine.sleeps"):
    """A sync handler that sleeps ``seconds``."""

    key: str
    seconds: float

    def process_message(self) -> None:
        _enter(self.key)
        try:
            time.sleep(self.seconds)
        finally:
            _leave(self.key)


@attrs.define
class AsyncSleeps(Message, type_name="tests.engine.async_sleeps"):
    """An async handler that sleeps ``seconds``."""

    key: str
    seconds: float

    async def process_message(self) -> None:
        _enter(self.key)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            _leave(self.key)


@attrs.define
class Blocks(Message, type_name="tests.engine.blocks"):
    """Waits for :data:`gate` (up to 30 s)."""

    key: str

    def process_message(self) -> None:
        _enter(self.key)
        try:
            gate.wait(30)
        finally:
            _leave(self.key)


@attrs.define
class Hangs(Message, type_name="tests.engine.hangs"):
    """A sync handler that sleeps 10 s with a 1 s time limit: two attempts, then dead."""

    key: str
    time_limit = 1.0
    max_attempts = 2
    retry_delay = 0.1
    retry_delay_max = 0.2

    def process_message(self) -> None:
        _enter(self.key)
        try:
            time.sleep(10)
        finally:
            _leave(self.key)


@attrs.define
class AsyncHangs(Message, type_name="tests.engine.async_hangs"):
    """An async handler that sleeps 10 s with a 1 s time limit: two attempts, then dead."""

    key: str
    time_limit = 1.0
    max_attempts = 2
    retry_delay = 0.1
    retry_delay_max = 0.2

    async def process_message(self) -> None:
        _enter(self.key)
        try:
            await asyncio.sleep(10)
        finally:
            _leave(self.key)


@attrs.define
class Spins(Message, type_name="tests.engine.spins"):
    """A sync handler looping in Python for 10 s: TimeLimitExceeded interrupts it."""

    key: str
    time_limit = 1.0
    max_attempts = 1

    def process_message(self) -> None:
        _enter(self.key)
        try:
            end = time.monotonic() + 10
            while time.monotonic() < end:
                pass
        except BaseException as exc:
            raised.append(type(exc))
            raise
        finally:
            _leave(self.key)

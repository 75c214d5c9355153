"""Class keywords, rate parsing and limit keys (memory driver, one process)."""

from __future__ import annotations

import threading
import time

import attrs
import pytest

import pashq
from pashq.errors import UnsupportedError
from pashq.limits import parse_rate

_STARTS: dict[str, list[float]] = {}
_LOCK = threading.Lock()


@attrs.define
class PerCustomer(pashq.Message, type_name="kw.per_customer", rate_limit="3/2s"):
    customer: str
    n: int

    def get_limit_key(self) -> str:
        return self.customer

    def process_message(self) -> None:
        with _LOCK:
            _STARTS.setdefault(self.customer, []).append(time.monotonic())


@attrs.define
class OnStart(pashq.Message, type_name="kw.on_start", unique_for=60, unique_until="start"):
    n: int

    def process_message(self) -> None:
        # The key is free while this runs: a new dispatch queues a new message.
        assert OnStart(self.n).dispatch() != pashq.current().id


@attrs.define
class Keyed(pashq.Message, type_name="kw.keyed", unique_for=60):
    account: int
    note: str

    def get_unique_key(self) -> str:
        return f"account:{self.account}"

    def process_message(self) -> None:
        pass


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100/m", (100, 60.0)), ("50/s", (50, 1.0)), ("10/30s", (10, 30.0)), ("1/d", (1, 86400.0))],
)
def test_rate_limit_forms(text: str, expected: tuple[int, float]) -> None:
    """Counts per unit, optionally with a number of units."""
    assert parse_rate(text, "here") == expected


@pytest.mark.parametrize("text", ["100", "0/s", "5/w", "x/m", 5])
def test_bad_rate_limit_names_the_class(text: object) -> None:
    """A bad rate_limit fails at class definition, naming the class and the forms."""
    with pytest.raises(ValueError, match=r"Bad: rate_limit must look like '100/m'"):

        class Bad(pashq.Message, rate_limit=text):  # type: ignore[arg-type]
            pass


def test_bad_unique_and_concurrency_keywords() -> None:
    """unique_for > 0, unique_until 'ack' or 'start' (with unique_for), max_concurrency >= 1."""
    with pytest.raises(ValueError, match="unique_for must be"):

        class A(pashq.Message, unique_for=0):
            pass

    with pytest.raises(ValueError, match="unique_until must be"):

        class B(pashq.Message, unique_for=5, unique_until="end"):
            pass

    with pytest.raises(ValueError, match="unique_until needs unique_for"):

        class C(pashq.Message, unique_until="start"):
            pass

    with pytest.raises(ValueError, match="max_concurrency must be"):

        class D(pashq.Message, max_concurrency=0):
            pass


def test_limit_key_splits_the_rate_limit() -> None:
    """3 per 2 s per customer: two customers' 6 messages each; neither exceeds its own
    limit, and they do not share one."""
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    _STARTS.clear()
    pashq.queue().dispatch_many(
        "default", [PerCustomer(c, i) for i in range(6) for c in ("a", "b")]
    )
    stats = pashq.Worker("default", concurrency=4, install_signal_handlers=False).run(
        until_empty=True
    )
    assert stats.acked == 12 and stats.deferred > 0 and stats.dead_lettered == 0
    for customer in ("a", "b"):
        starts = sorted(_STARTS[customer])
        assert len(starts) == 6
        assert starts[3] - starts[0] >= 2.0 - 0.1  # the 4th waits for the 1st to leave
    # Within the first 2 s both customers got 3 (one shared limit would allow 3 in all).
    first = min(min(v) for v in _STARTS.values())
    assert sum(1 for v in _STARTS.values() for t in v if t - first < 1.5) == 6


def test_unique_until_start_frees_the_key_when_processing_starts() -> None:
    """With unique_until='start' a dispatch from inside the handler queues a new message."""
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    first = OnStart(1).dispatch()
    assert OnStart(1).dispatch() == first
    stats = pashq.Worker("default", install_signal_handlers=False, max_messages=1).run()
    assert stats.acked == 1
    assert pashq.queue().stats("default").ready == 1


def test_overridden_unique_key() -> None:
    """get_unique_key() decides: another note on the same account is a duplicate."""
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    first = Keyed(1, "x").dispatch()
    assert Keyed(1, "y").dispatch() == first
    assert Keyed(2, "x").dispatch() != first


def test_unique_needs_a_store() -> None:
    """A connection without coordination and without ``coordination =`` says what to add."""
    pashq.configure({"queues": {"default": {"type": "logger"}}})
    with pytest.raises(UnsupportedError, match='add coordination = "<connection>"'):
        Keyed(1, "x").dispatch()


def test_coordination_must_name_a_configured_connection() -> None:
    """``coordination = "db"`` without ``[queues.db]`` fails at configure time."""
    with pytest.raises(pashq.ConfigError, match="'coordination' names connection 'db'"):
        pashq.configure({"queues": {"default": {"type": "memory", "coordination": "db"}}})


def test_borrowed_store() -> None:
    """A logger connection with ``coordination = "store"`` keeps its keys in memory there."""
    pashq.configure(
        {
            "queues": {
                "default": {"type": "logger", "coordination": "store"},
                "store": {"type": "memory"},
            }
        }
    )
    first = Keyed(9, "x").dispatch()
    assert Keyed(9, "y").dispatch() == first


@attrs.define
class Crashy(pashq.Message, type_name="kw.crashy", unique_for=600):
    n: int
    max_attempts = 1

    def process_message(self) -> None:
        raise RuntimeError("boom")


def test_dead_lettered_unique_message_frees_its_key() -> None:
    """After a unique message is dead-lettered, an equal dispatch queues a new one."""
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    first = Crashy(1).dispatch()
    assert Crashy(1).dispatch() == first
    stats = pashq.Worker("default", install_signal_handlers=False).run(until_empty=True)
    assert stats.dead_lettered == 1
    assert Crashy(1).dispatch() != first

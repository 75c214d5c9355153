"""A worker run leaves the objects that existed before it out of full collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import attrs
import pytest

import pashq
from pashq.testing import make_connection
from pashq.worker.collector import frozen_heap

seen: list[int] = []


@attrs.define
class Probe(pashq.Message, type_name="tests.collector.probe"):
    """Records the collector's freeze count while it is processed."""

    n: int

    def process_message(self) -> None:
        seen.append(gc.get_freeze_count())


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    seen.clear()
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


def _run(freeze_gc: bool = True) -> None:
    connection = make_connection({"type": "memory"}, name="collector")
    try:
        connection.dispatch_many("q", [Probe(1), Probe(2)])
        pashq.Worker(
            "q",
            connection=connection,
            max_messages=2,
            install_signal_handlers=False,
            freeze_gc=freeze_gc,
        ).run()
    finally:
        connection.close()


def test_the_heap_is_frozen_during_the_run_and_thawed_after() -> None:
    _run()
    assert len(seen) == 2 and all(count > 0 for count in seen)
    assert gc.get_freeze_count() == 0


def test_freeze_gc_false_leaves_the_collector_alone() -> None:
    _run(freeze_gc=False)
    assert seen == [0, 0]


def test_a_freeze_the_application_made_is_left_as_it_is() -> None:
    gc.freeze()
    _run()
    assert gc.get_freeze_count() > 0  # not thawed by the worker


def test_nested_runs_thaw_when_the_last_one_ends() -> None:
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with frozen_heap():
            pass
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0


def test_nothing_is_frozen_while_the_collector_is_disabled() -> None:
    gc.disable()
    try:
        with frozen_heap():
            assert gc.get_freeze_count() == 0
    finally:
        gc.enable()

"""The move engine in one process, on the memory driver: what happens to a batch the
destination refuses, and what a repeated move of dead letters keeps."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from pashq import DriverError, MovedMessage, hookimpl
from pashq.move import Move
from pashq.testing import make_connection

from .move_messages import Parcel


class _Refuses:
    """A plugin on the destination that fails every push of moved messages."""

    @hookimpl(tryfirst=True)
    def pashq_push_moved(self, queue: str, messages: Sequence[MovedMessage]) -> list[str]:
        raise DriverError(f"refused {len(messages)} message(s) for {queue!r}")


def test_a_batch_the_destination_refuses_goes_back_to_the_source_with_its_due_times() -> None:
    """Nothing is acked at the source when the destination fails: ready messages are ready
    again at once and delayed ones wait for the time they had left."""
    source, destination = (
        make_connection({"type": "memory"}, "a"),
        make_connection({"type": "memory"}, "b"),
    )
    source.dispatch_many("jobs", [Parcel(n) for n in range(5)])
    source.dispatch_many("jobs", [Parcel(n) for n in range(2)], delay=3600)
    destination.plugin_manager.register(_Refuses())
    with pytest.raises(DriverError, match="refused 7 message"):
        Move(source, "jobs", destination, "jobs").run()
    stats = source.stats("jobs")
    assert (stats.ready, stats.delayed, stats.in_flight) == (5, 2, 0)
    assert destination.stats("jobs").ready == 0
    waiting = source.hook.pashq_claim_waiting(queue="jobs", max_messages=10)
    assert sorted(round(w.due_in, -2) for w in waiting) == [0] * 5 + [3600] * 2


def test_limit_counts_dead_letters_after_waiting_messages() -> None:
    """``limit`` takes waiting messages first, then dead letters, never more in all."""
    source, destination = (
        make_connection({"type": "memory"}, "a"),
        make_connection({"type": "memory"}, "b"),
    )
    source.dispatch_many("jobs", [Parcel(n) for n in range(4)])
    for delivery in source.hook.pashq_pull(queue="jobs", max_messages=2, timeout=1):
        source.hook.pashq_dead_letter(queue="jobs", delivery=delivery, reason="bad", traceback=None)
    report = Move(source, "jobs", destination, "jobs", failed=True, limit=3).run()
    assert (report.moved, report.dead_letters) == (2, 1)
    assert len(destination.failed("jobs")) == 1
    assert len(source.failed("jobs")) == 1

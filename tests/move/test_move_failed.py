"""``pashq move --failed``: dead letters travel with their reasons where both sides keep
them (SQLite -> PostgreSQL -> RabbitMQ), or become waiting messages (--failed-as waiting)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from pashq.testing import drain, wait_for

from .conftest import POSTGRESQL_URL, Setup, database_ids
from .move_messages import Parcel

pytestmark = [pytest.mark.postgresql, pytest.mark.rabbitmq]


def _dead_letters(setup: Setup, queue: str, count: int) -> dict[str, str]:
    """Dispatch ``count`` messages to ``lite`` and dead-letter each with its own reason."""
    lite = setup.connect("lite")
    try:
        lite.dispatch_many(queue, [Parcel(n) for n in range(count)])
        reasons = {}
        for delivery in drain(lite, queue, count, ack=False):
            reason = f"bad parcel {delivery.id[:6]}: ValueError"
            lite.hook.pashq_dead_letter(
                queue=queue, delivery=delivery, reason=reason, traceback="Traceback: here"
            )
            reasons[delivery.id] = reason
        return reasons
    finally:
        lite.close()


def _failed(setup: Setup, name: str, queue: str, expected: int) -> dict[str, Any]:
    connection = setup.connect(name)
    try:
        listed = wait_for(
            lambda: (found := connection.failed(queue, 1000)) and len(found) >= expected and found,
            timeout=20,
            what=f"{expected} dead letters on {name}",
        )
        return {d.id: d for d in listed}
    finally:
        connection.close()


def test_dead_letters_keep_their_reasons_across_database_and_rabbitmq(
    setup: Setup, rabbit_queues: list[str]
) -> None:
    """SQLite -> PostgreSQL -> RabbitMQ with --failed: each dead letter arrives among the
    destination's dead letters with its reason, traceback and attempts, and leaves the
    source; waiting messages move alongside."""
    queue = f"dead-{uuid.uuid4().hex[:8]}"
    rabbit_queues.append(queue)
    reasons = _dead_letters(setup, queue, 5)
    lite = setup.connect("lite")
    lite.dispatch_many(queue, [Parcel(n) for n in range(3)])
    lite.close()

    first = json.loads(setup.move(f"lite:{queue}", f"pg:{queue}", "--failed").stdout)
    assert (first["moved"], first["dead_letters"]) == (3, 5)
    assert "reason" in first["kept"]
    at_pg = _failed(setup, "pg", queue, 5)
    assert {i: d.reason for i, d in at_pg.items()} == reasons
    assert all(d.traceback == "Traceback: here" and d.attempts == 1 for d in at_pg.values())
    assert first["left_failed"] == 0

    second = json.loads(setup.move(f"pg:{queue}", f"rabbit:{queue}", "--failed").stdout)
    assert (second["moved"], second["dead_letters"]) == (3, 5)
    at_rabbit = _failed(setup, "rabbit", queue, 5)
    assert {i: d.reason for i, d in at_rabbit.items()} == reasons
    assert {i: d.failed_at for i, d in at_rabbit.items()} == {
        i: d.failed_at for i, d in at_pg.items()
    }
    assert database_ids(POSTGRESQL_URL, setup.tables["pg"]["table_prefix"], queue, True) == []


def test_a_repeated_move_of_dead_letters_keeps_one_copy_on_the_database(
    setup: Setup,
) -> None:
    """Dead letters stored at the destination but still at the source (a move that died
    before removing them) are skipped by id when the move runs again."""
    queue = f"again-{uuid.uuid4().hex[:8]}"
    reasons = _dead_letters(setup, queue, 3)
    lite, pg = setup.connect("lite"), setup.connect("pg")
    try:
        stored = lite.failed(queue, 10)
        pg.hook.pashq_failed_store(queue=queue, dead_letters=stored[:2])  # the "crash"
    finally:
        lite.close()
        pg.close()
    setup.move(f"lite:{queue}", f"pg:{queue}", "--failed")
    kept = database_ids(POSTGRESQL_URL, setup.tables["pg"]["table_prefix"], queue, True)
    assert sorted(kept) == sorted(reasons)


def test_failed_as_waiting_makes_dead_letters_waiting_messages(setup: Setup) -> None:
    """``--failed-as waiting`` puts dead letters back in line at the destination, with a
    fresh attempt count, and says that their reasons are not kept."""
    queue = f"wait-{uuid.uuid4().hex[:8]}"
    reasons = _dead_letters(setup, queue, 4)
    report = json.loads(
        setup.move(f"lite:{queue}", f"pg:{queue}", "--failed", "--failed-as", "waiting").stdout
    )
    assert report["dead_as_waiting"] == 4
    assert any("reasons are not kept" in note for note in report["notes"])
    pg = setup.connect("pg")
    try:
        back = drain(pg, queue, 4)
        assert sorted(d.id for d in back) == sorted(reasons)
        assert all(d.attempts == 1 for d in back)
        assert pg.failed(queue) == []
    finally:
        pg.close()

"""``pashq_push_stream``: a driver that implements it gets a large dispatch batch by batch."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import pytest

import pashq
from pashq import EnvelopeError, PartialPushError
from pashq.connection import Connection
from pashq.delivery import OutgoingMessage
from pashq.testing import make_connection


@attrs.define
class Reading(pashq.Message, type_name="tests.push_stream.reading"):
    """A message whose value may be made unencodable (NaN)."""

    value: float


class Streamer:
    """Records each batch it is handed, and stores it through the memory driver; after
    ``refuse_after`` batches it refuses the next one, as a backend would (reading no
    further)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.batches: list[list[str]] = []
        self.refuse_after: int | None = None

    @pashq.hookimpl
    def pashq_push_stream(
        self, queue: str, batches: Iterator[Sequence[OutgoingMessage]], options: Mapping[str, Any]
    ) -> list[str]:
        stored: list[str] = []
        for batch in batches:
            if len(self.batches) == self.refuse_after:
                raise PartialPushError("refused", stored=stored, not_stored=[m.id for m in batch])
            self.batches.append([m.id for m in batch])
            stored += self.connection.driver.pashq_push(queue=queue, messages=batch, options={})
        return stored


@pytest.fixture
def streamed() -> Iterator[tuple[Connection, Streamer]]:
    connection = make_connection({"type": "memory"}, name="stream")
    streamer = Streamer(connection)
    connection.plugin_manager.register(streamer)
    yield connection, streamer
    connection.close()


def test_a_large_dispatch_arrives_in_batches_of_the_drivers_size(
    streamed: tuple[Connection, Streamer],
) -> None:
    connection, streamer = streamed
    size = connection.capabilities.batch_size
    ids = connection.dispatch_many("q", [Reading(float(i)) for i in range(2 * size + 7)])
    assert [len(b) for b in streamer.batches] == [size, size, 7]
    assert [i for batch in streamer.batches for i in batch] == ids
    assert connection.stats("q").ready == len(ids)


def test_a_dispatch_of_one_batch_takes_the_plain_push(
    streamed: tuple[Connection, Streamer],
) -> None:
    connection, streamer = streamed
    connection.dispatch_many("q", [Reading(1.0), Reading(2.0)])
    assert streamer.batches == []
    assert connection.stats("q").ready == 2


def test_a_message_that_cannot_be_encoded_in_a_later_batch_is_a_partial_push(
    streamed: tuple[Connection, Streamer],
) -> None:
    connection, streamer = streamed
    size = connection.capabilities.batch_size
    readings = [Reading(float(i)) for i in range(3 * size)]
    readings[size + 5] = Reading(math.nan)
    with pytest.raises(PartialPushError, match="stopped after") as caught:
        connection.dispatch_many("q", readings)
    assert isinstance(caught.value.__cause__, EnvelopeError)
    assert caught.value.stored == streamer.batches[0]
    assert len(caught.value.not_stored) == 2 * size
    assert connection.stats("q").ready == size


def test_a_message_that_cannot_be_encoded_in_the_first_batch_stores_nothing(
    streamed: tuple[Connection, Streamer],
) -> None:
    connection, streamer = streamed
    size = connection.capabilities.batch_size
    readings = [Reading(float(i)) for i in range(2 * size)]
    readings[3] = Reading(math.inf)
    with pytest.raises(EnvelopeError, match="not JSON"):
        connection.dispatch_many("q", readings)
    assert streamer.batches == []
    assert connection.stats("q").ready == 0


def test_a_partial_push_names_the_batches_the_driver_never_took_too(
    streamed: tuple[Connection, Streamer],
) -> None:
    connection, streamer = streamed
    streamer.refuse_after = 1
    size = connection.capabilities.batch_size
    with pytest.raises(PartialPushError) as caught:
        connection.dispatch_many("q", [Reading(float(i)) for i in range(3 * size)])
    assert len(caught.value.stored) == size
    assert len(caught.value.not_stored) == 2 * size
    assert set(caught.value.stored).isdisjoint(caught.value.not_stored)

"""Unique keys on a store other than the driver: claimed briefly, kept once pushed.

A dispatcher killed between claiming a key and pushing its message must not block the key
for the whole ``unique_for``: the claim runs out after ``CLAIM_TTL`` and the next dispatch
queues. A pushed message's key is kept for ``unique_for``. Memory connections, one the
other's store (the path RabbitMQ and SQS connections with a database store take).
"""

from __future__ import annotations

import attrs
import pytest

import pashq
import pashq.unique as unique
from pashq.coordination_store import store_for
from pashq.testing import wait_for


@attrs.define
class Refresh(pashq.Message, type_name="coord.claim.refresh", unique_for=600):
    account: str

    def process_message(self) -> None:
        pass


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> pashq.Connection:
    monkeypatch.setattr(unique, "CLAIM_TTL", 0.3)
    pashq.configure(
        {
            "queues": {
                "default": {"type": "memory", "coordination": "store"},
                "store": {"type": "memory"},
            }
        }
    )
    return pashq.queue()


def test_a_killed_dispatchers_claim_frees_the_key_after_the_claim(
    connection: pashq.Connection,
) -> None:
    store = store_for(connection, "test")
    key = unique.unique_key_of(Refresh("a"))
    assert store.acquire(key, "killed-dispatcher", unique.CLAIM_TTL).taken  # then it died
    assert Refresh("a").dispatch() == "killed-dispatcher"  # a duplicate while claimed
    queued = wait_for(
        lambda: (got := Refresh("a").dispatch()) != "killed-dispatcher" and got, timeout=10
    )
    assert connection.stats("default").ready == 1
    assert Refresh("a").dispatch() == queued  # now held by the queued message


def test_a_pushed_messages_key_is_kept_for_unique_for(connection: pashq.Connection) -> None:
    first = Refresh("b").dispatch()
    got = store_for(connection, "test").acquire(
        unique.unique_key_of(Refresh("b")), "someone-else", 1.0
    )
    assert not got.taken and got.holder == first
    assert got.wait > 60  # kept for unique_for (600 s), not the 0.3 s claim

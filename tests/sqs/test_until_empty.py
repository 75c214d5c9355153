"""``until_empty`` on SQS: the last short receive and SQS's count end the run, no long poll."""

from __future__ import annotations

import uuid
from collections.abc import Generator, Sequence
from typing import Any

from pashq import Worker, hookimpl
from pashq.delivery import Delivery
from pashq.testing import make_connection
from pashq.testing.messages import Recorded, processed


class Pulls:
    """Records each pull's timeout and each ack, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []

    @hookimpl(wrapper=True)
    def pashq_pull(
        self, queue: str, max_messages: int, timeout: float
    ) -> Generator[None, list[Delivery], list[Delivery]]:
        deliveries = yield
        self.events.append(("pull", timeout))
        return deliveries

    @hookimpl(wrapper=True)
    def pashq_ack(self, queue: str, deliveries: Sequence[Delivery]) -> Generator[None, None, None]:
        result = yield
        self.events.append(("ack", 0.0))
        return result


def test_until_empty_ends_without_a_waiting_receive(sqs_table: dict[str, Any]) -> None:
    """With poll_timeout=5, no receive after the last ack waits: SQS's count confirms."""
    conn = make_connection(sqs_table)
    pulls = Pulls()
    conn.plugin_manager.register(pulls)
    queue, key = f"empty-{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    conn.dispatch_many(queue, [Recorded(key, n) for n in range(25)])
    stats = Worker(queue, connection=conn, install_signal_handlers=False, poll_timeout=5.0).run(
        until_empty=True
    )
    assert stats.acked == 25 and sorted(processed(key)) == list(range(25))
    last_ack = max(i for i, (what, _) in enumerate(pulls.events) if what == "ack")
    after = [timeout for what, timeout in pulls.events[last_ack:] if what == "pull"]
    assert all(timeout == 0.0 for timeout in after), pulls.events[last_ack:]
    conn.close()

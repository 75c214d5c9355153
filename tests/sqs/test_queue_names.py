"""Queue names SQS cannot hold fail at dispatch and at worker start, naming the limit."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqs_worker_messages import Numbered

from pashq import Connection, Worker
from pashq.errors import QueueNameError

pytestmark = pytest.mark.sqs

OpenSQS = Callable[..., Connection]


def test_name_whose_dead_letter_queue_is_over_80_characters_is_refused_at_dispatch(
    open_sqs: OpenSQS,
) -> None:
    conn = open_sqs()
    name = "q" * 74  # "-failed" makes 81
    with pytest.raises(QueueNameError, match=r"dead-letter queue.*81 characters.*80"):
        conn.dispatch(name, Numbered(1))


def test_longest_name_that_fits_with_its_dead_letter_queue_is_accepted(
    open_sqs: OpenSQS,
) -> None:
    conn = open_sqs()
    name = "q" * 73  # "-failed" makes 80
    conn.check_queue_name(name)
    conn.dispatch(name, Numbered(1))


def test_prefix_and_fifo_suffix_count_towards_the_80_characters(open_sqs: OpenSQS) -> None:
    conn = open_sqs(prefix="app-", fifo=True, create_queues=False)
    with pytest.raises(QueueNameError, match=r"81 characters"):
        conn.check_queue_name("q" * 72)  # "app-" + 72 + ".fifo"
    conn.check_queue_name("q" * 71)


@pytest.mark.parametrize("name", ["orders.v2", "orders/eu", "ördres", "a b", "x.fifo.fifo"])
def test_name_with_characters_sqs_refuses_is_refused(open_sqs: OpenSQS, name: str) -> None:
    conn = open_sqs()
    with pytest.raises(QueueNameError, match=r"letters, digits, '-' and '_'"):
        conn.check_queue_name(name)


def test_fifo_name_is_accepted(open_sqs: OpenSQS) -> None:
    conn = open_sqs()
    conn.check_queue_name("orders.fifo")


def test_bad_name_is_refused_at_worker_start(open_sqs: OpenSQS) -> None:
    conn = open_sqs()
    worker = Worker(["orders.v2"], connection=conn, install_signal_handlers=False)
    with pytest.raises(QueueNameError, match=r"orders\.v2"):
        worker.run(until_empty=True)


def test_names_are_not_checked_with_queue_urls(open_sqs: OpenSQS) -> None:
    """With queue_urls a pashq name is only a key: the SQS name is in the URL."""
    conn = open_sqs(queue_urls={"orders.v2": "http://127.0.0.1:1/000000000000/orders"})
    conn.check_queue_name("orders.v2")
